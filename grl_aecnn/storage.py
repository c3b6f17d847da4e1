"""Where a run lives: a local folder (the default) or an object store (``s3://bucket/prefix``,
``gs://...``), reached through ``pyarrow.fs`` only.

A run on a store is mirrored in a local scratch folder (``$GRL_AECNN_SCRATCH``, default
``~/.cache/grl-aecnn/runs``): a command first pulls the run into the mirror, the stages read and
write there as they do for a local run, and each finished stage is pushed back (its
``stage.json`` last, so a half-pushed stage never counts as finished). Ray Tune and Ray Train
write their checkpoints straight to the store (``RunConfig(storage_path=<URI>)``), so trials on
any node can save and restore them. An S3-compatible store (MinIO, Ceph, moto) is named by
the standard ``AWS_ENDPOINT_URL``; credentials come from the usual AWS variables or files.
Single files move with `upload_file` / `download_file` (the codec sweep's split-tensor shards:
published before the trials, `mark_pushed` so that `push_stage` does not copy them twice).
For a local run every function here is a no-op or returns the local path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from grl_aecnn.config import ExperimentConfig

SCHEMES = ("s3://", "gs://", "gcs://")
MARKER = "stage.json"
PROBE = ".grl-aecnn-write-check"  # `check` writes and deletes it


class StoreUnavailable(RuntimeError):
    """The object store cannot be used (endpoint, bucket, credentials): exit 3 before any work."""


def is_uri(value: str) -> bool:
    """True for an object-store URI (anything else is a local path)."""
    return value.startswith(SCHEMES)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


@functools.lru_cache(maxsize=8)
def _filesystem(uri: str) -> tuple["pafs.FileSystem", str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise StoreUnavailable(f"storage {uri}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def check(uri: str) -> None:
    """StoreUnavailable naming ``uri`` unless its bucket exists and answers with these credentials."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
        fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))  # a listing needs read access
    except OSError as err:
        raise StoreUnavailable(f"storage {uri} is not reachable ({_first_line(err)}); check AWS_ENDPOINT_URL "
                               "and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)") from None
    if info.type == pafs.FileType.NotFound:
        raise StoreUnavailable(f"storage {uri}: bucket {bucket!r} does not exist (create it first)")
    _check_writable(fs, path, uri)


def _check_writable(fs: "pafs.FileSystem", path: str, uri: str) -> None:
    """Do once, in a probe folder, what a run does to its folder: create it, create it again
    (Ray Train and Tune re-create folders that exist), write a file, delete it all. A store that
    lets a client list but not write (read-only or missing credentials: S3-compatible servers
    may serve anonymous clients a part of the API) stops here, not inside a trainer."""
    probe = f"{path.rstrip('/')}/{PROBE}"
    try:
        fs.create_dir(probe)
        fs.create_dir(probe)
        with fs.open_output_stream(f"{probe}/check") as handle:
            handle.write(b"ok")
        fs.delete_dir(probe)
    except OSError as err:
        raise StoreUnavailable(f"storage {uri} does not accept writes ({_first_line(err)}); check the credentials "
                               "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)") from None


def mirror_root(uri: str) -> Path:
    """The local scratch folder that mirrors ``uri`` (one per URI)."""
    base = Path(os.environ.get("GRL_AECNN_SCRATCH") or Path.home() / ".cache" / "grl-aecnn" / "runs")
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:12]
    return base / f"{uri.split('://', 1)[0]}-{digest}"


def remote(cfg: "ExperimentConfig", local: Path) -> str | None:
    """The store URI of a path inside the run's mirror; None for a local run."""
    if not is_uri(cfg.output_dir):
        return None
    return join(cfg.run_location, Path(local).relative_to(cfg.run_dir).as_posix())


def ray_storage_path(cfg: "ExperimentConfig", local: Path) -> str:
    """``RunConfig(storage_path=...)`` for checkpoints that belong at ``local`` in the run."""
    return remote(cfg, local) or str(local)


def _download(uri: str, local: Path) -> None:
    """Copy a store folder or file to ``local`` (files already there are replaced)."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    if info.type == pafs.FileType.Directory:
        local.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def pull(cfg: "ExperimentConfig") -> None:
    """Check the store and copy the run (if it exists there) into its local mirror."""
    if not is_uri(cfg.output_dir):
        return
    check(cfg.run_location)
    _download(cfg.run_location, cfg.run_dir)


def push(cfg: "ExperimentConfig", local: Path) -> None:
    """Copy a file or folder of the run's mirror to the store (a no-op for a local run)."""
    import pyarrow.fs as pafs

    target = remote(cfg, local)
    if target is None or not local.exists():
        return
    fs, path = _filesystem(target)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def push_stage(cfg: "ExperimentConfig", stage: str) -> None:
    """Copy a finished stage's folder to the store, its ``stage.json`` last."""
    folder = cfg.run_dir / stage
    if remote(cfg, folder) is None:
        return
    for item in sorted(folder.iterdir()):
        if item.name != MARKER and item.resolve() not in _PUSHED:
            push(cfg, item)
    push(cfg, folder / MARKER)


def remove(cfg: "ExperimentConfig", local: Path) -> None:
    """Delete the store's copy of a folder of the run (a no-op for a local run or a missing folder)."""
    target = remote(cfg, local)
    if target is None:
        return
    fs, path = _filesystem(target)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def local_checkpoint(cfg: "ExperimentConfig", checkpoint: Any) -> Path:
    """A Ray checkpoint as a folder of the run's mirror (downloaded when it lives on the store)."""
    import pyarrow.fs as pafs

    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return Path(checkpoint.path)
    run_path = _filesystem(cfg.run_location)[1]
    local = cfg.run_dir / Path(checkpoint.path).relative_to(run_path)
    shutil.rmtree(local, ignore_errors=True)
    checkpoint.to_directory(str(local))
    return local


def read_text(uri: str) -> str | None:
    """A small file of the store as text; None when it is missing."""
    fs, path = _filesystem(uri)
    try:
        with fs.open_input_stream(path) as handle:
            return handle.read().decode()
    except FileNotFoundError:
        return None


def download_file(uri: str, local: Path, block: int = 8 * 2**20) -> None:
    """Copy one file of the store to ``local``, a block at a time (FileNotFoundError when missing)."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(path) as source, open(local, "wb") as target:
        shutil.copyfileobj(source, target, block)


def upload_file(local: Path, uri: str) -> None:
    """Copy one local file to ``uri`` on the store."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


_PUSHED: set[Path] = set()


def mark_pushed(local: Path) -> None:
    """A folder of the run that is on the store already (published early): `push_stage` skips it."""
    _PUSHED.add(Path(local).resolve())
