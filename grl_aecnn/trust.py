"""Authenticate the checkpoint folders that only a pickle-based library can load.

Most of a run folder is safetensors and JSON, which load without running code. RLlib's
algorithm checkpoints are pickles: a planted one would run its code when restored. So every
such folder is signed when the project writes it (an HMAC-SHA256 over a manifest of its files)
and only loaded through ``verified_copy``, which copies the signed files, checking each one as
it reads it, into a private temporary folder. Files outside the manifest are never copied, so
never loaded.

The key lives outside every run folder: ``$GRL_AECNN_KEY_FILE``, by default
``~/.config/grl-aecnn/key``, created (mode 0600) on first use. A run folder moved to another
machine resumes there only with the same key file; without it, its checkpoints are ignored
and the stage starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

KEY_ENV = "GRL_AECNN_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/grl-aecnn/key")
SIGNATURE = ".grl-aecnn-signature.json"


class Untrusted(Exception):
    """A folder whose signature is missing or does not match its files; never load it."""


def key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or DEFAULT_KEY_FILE).expanduser()


def load_key() -> bytes:
    """The signing key, created on first use; refused if other users may write it."""
    path = key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileExistsError):  # another process may create it at the same time
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    if path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Untrusted(f"{path}: the checkpoint signing key is writable by other users; chmod 600 it")
    key = path.read_text().strip()
    if len(key) < 32:
        raise Untrusted(f"{path}: the checkpoint signing key is too short (delete it to make a new one)")
    return key.encode()


def _mac(key: bytes, manifest: dict[str, str]) -> str:
    return hmac.new(key, json.dumps(manifest, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def sign(folder: Path, key: bytes) -> None:
    """Write the folder's signature: the SHA-256 of every regular file and an HMAC over them."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise Untrusted(f"{path}: a checkpoint may not contain links")
        if path.is_file() and path.name != SIGNATURE:
            manifest[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / SIGNATURE).write_text(json.dumps({"files": manifest, "hmac": _mac(key, manifest)}, indent=1))


def _manifest(folder: Path, key: bytes) -> dict[str, str]:
    try:
        record = json.loads((folder / SIGNATURE).read_text())
        manifest, mac = record["files"], record["hmac"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise Untrusted(f"{folder}: no valid signature ({type(err).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, manifest)):
        raise Untrusted(f"{folder}: the signature does not match (not written by this project with this key)")
    return manifest


@contextlib.contextmanager
def verified_copy(folder: Path, key: bytes) -> Iterator[Path]:
    """A private copy of exactly the signed files of ``folder``, each checked as it is read."""
    manifest = _manifest(folder, key)
    with tempfile.TemporaryDirectory(prefix="grl-aecnn-verified-") as tmp:
        root = Path(tmp)
        for rel, digest in manifest.items():
            source = folder / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute() or source.is_symlink():
                raise Untrusted(f"{source}: not a plain file inside the signed folder")
            try:
                data = source.read_bytes()
            except OSError as err:
                raise Untrusted(f"{source}: signed but unreadable ({err.strerror})") from None
            if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
                raise Untrusted(f"{source}: changed since it was signed")
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield root


def verify(folder: Path, key: bytes) -> None:
    """Raise ``Untrusted`` unless every signed file of ``folder`` is as it was signed."""
    with verified_copy(folder, key):
        pass


def copy_signed(folder: Path, dest: Path, key: bytes) -> None:
    """Copy a verified folder to ``dest`` atomically (a killed copy leaves no half folder)."""
    with verified_copy(folder, key) as safe:
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(safe, tmp)
        sign(tmp, key)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
