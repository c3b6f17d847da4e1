"""Split tensors as a folder of .npy shards, written batch by batch and read by batch.

At the paper's scale (64x56x56 float32 per image, thousands of images) no process may hold the
whole set, so the head's outputs go to disk shard by shard and every reader maps only the
shards its batch touches, copies those rows and unmaps them again: a reader's memory is bounded
by its batch. Sets small enough to hold (`IN_MEMORY_BYTES`) are read whole once, which is faster
and offers the same interface. `SplitArray` mimics the two tensor operations the codec code
uses, ``z[idx]`` and ``z.split(n)``, so training code runs unchanged on a plain tensor too.

On a cluster whose only shared storage is an object store, the driver `publish`es the folder to
the run's store (``s3://...``; shards first, ``index.json`` last) and the array carries that URI.
A reader on a node that lacks the driver's folder (or holds another set under that path) fetches
each shard it touches, once, into a node-local cache under ``$GRL_AECNN_SCRATCH`` and maps it
from there, so its memory stays bounded by its batch and its disk by the shards it read. A
reader with the folder reads it in place; a local run never copies anything.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from grl_aecnn.input_files import BadFile

INDEX_FILE = "index.json"
IN_MEMORY_BYTES = 256 * 2**20  # sets up to this size are held whole by each reader
CHUNK_BYTES = 64 * 2**20  # rows read at once by sequential passes (teacher logits, accuracy)


class ShardError(BadFile):
    """A shard or index of a set is missing or unreadable; the message is one line naming it."""


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _shard_name(k: int) -> str:
    return f"{k:05d}.npy"


class ShardWriter:
    """Appends row batches as numbered .npy shards; `close` publishes the folder atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.counts: list[int] = []
        self.row_shape: tuple[int, ...] | None = None

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if self.row_shape is None:
            self.row_shape = tuple(rows.shape[1:])
        elif tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"shard rows of shape {rows.shape[1:]} after rows of shape {self.row_shape}")
        np.save(self.partial / _shard_name(len(self.counts)), rows)
        self.counts.append(len(rows))

    def close(self) -> "SplitArray":
        if self.row_shape is None:
            raise ValueError(f"no rows written to {self.folder}")
        # The id tells this set from an earlier one written to the same place (node-local caches).
        index = {"row_shape": self.row_shape, "counts": self.counts, "id": uuid.uuid4().hex}
        (self.partial / INDEX_FILE).write_text(json.dumps(index))
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.partial, self.folder)
        return SplitArray.open(self.folder)


def _read_index(location: Path | str) -> dict[str, Any]:
    """A set's index from a local folder or a store URI (a store's problems as one-line ShardErrors)."""
    from grl_aecnn import storage

    if isinstance(location, str) and storage.is_uri(location):
        uri = storage.join(location, INDEX_FILE)
        try:
            text = storage.read_text(uri)
        except OSError as err:
            raise ShardError(f"split tensors {uri} cannot be read ({_first_line(err)})") from None
        if text is None:
            raise ShardError(f"split tensors {uri} is missing from the store")
    else:
        text = (Path(location) / INDEX_FILE).read_text()
        uri = str(Path(location) / INDEX_FILE)
    try:
        index = json.loads(text)
        counts, row_shape = [int(n) for n in index["counts"]], tuple(int(n) for n in index["row_shape"])
    except (ValueError, KeyError, TypeError):
        raise ShardError(f"split tensors {uri} is not a shard index") from None
    return {"counts": counts, "row_shape": row_shape, "id": str(index.get("id", ""))}


class SplitArray:
    """Rows [N, *row_shape] float32, held in memory or read per batch from shards (in a local
    folder, or fetched shard by shard from ``uri`` when this node lacks that folder)."""

    def __init__(self, folder: Path | None, counts: list[int], row_shape: tuple[int, ...],
                 data: torch.Tensor | None = None, uri: str | None = None, set_id: str = "") -> None:
        self.folder, self.row_shape, self.data = folder, tuple(row_shape), data
        self.uri, self.set_id = uri, set_id
        self.counts = list(counts)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._source: Path | None = None  # where this process maps shards from (resolved on first read)

    @classmethod
    def open(cls, folder: Path | str, in_memory_bytes: int = IN_MEMORY_BYTES) -> "SplitArray":
        """The shards in `folder` (a local folder or a store URI); read whole now when they fit in
        `in_memory_bytes`."""
        from grl_aecnn import storage

        index = _read_index(folder)
        if isinstance(folder, str) and storage.is_uri(folder):
            array = cls(None, index["counts"], index["row_shape"], uri=folder.rstrip("/"), set_id=index["id"])
        else:
            array = cls(Path(folder), index["counts"], index["row_shape"], set_id=index["id"])
        if array.nbytes <= in_memory_bytes:
            data = torch.from_numpy(np.concatenate([array._shard(k)[:] for k in range(len(array.counts))]))
            return cls(None, array.counts, array.row_shape, data, array.uri, array.set_id)
        return array

    def with_uri(self, uri: str | None) -> "SplitArray":
        """This array, also readable from ``uri`` (where `publish` put its folder)."""
        return SplitArray(self.folder, self.counts, self.row_shape, self.data, uri, self.set_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}  # another process resolves its own source

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _resolve(self) -> Path:
        """The local folder when this node has it (and, for a published set, it is this set), else
        this node's cache of ``uri``."""
        if self.uri is None:
            return self.folder
        if self.folder is not None:
            try:
                if _read_index(self.folder)["id"] == self.set_id:
                    return self.folder
            except (OSError, ShardError):
                pass
        from grl_aecnn import storage

        root = storage.mirror_root(self.uri)
        cache = root / (self.set_id or "set")
        if not cache.is_dir():
            if root.is_dir():  # an earlier set cached for this URI
                for old in root.iterdir():
                    if old.name != cache.name:
                        shutil.rmtree(old, ignore_errors=True)
            cache.mkdir(parents=True, exist_ok=True)
        return cache

    def _fetch(self, k: int, path: Path) -> None:
        from grl_aecnn import storage

        uri = storage.join(self.uri, _shard_name(k))
        partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
        try:
            storage.download_file(uri, partial)
        except FileNotFoundError:
            raise ShardError(f"split tensor shard {uri} is missing from the store") from None
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise ShardError(f"split tensor shard {uri} cannot be read ({_first_line(err)})") from None
        os.replace(partial, path)

    def _shard(self, k: int) -> np.ndarray:
        if self._source is None:
            self._source = self._resolve()
        path = self._source / _shard_name(k)
        cached = self._source != self.folder
        if cached and not path.exists():
            self._fetch(k, path)
        expected = (self.counts[k], *self.row_shape)
        try:
            mapped = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise ShardError(f"split tensor shard {path} is missing") from None
        except (OSError, ValueError) as err:
            reason = "truncated" if "length is greater" in str(err) else "not a .npy file"
        else:
            if mapped.shape == expected and mapped.dtype == np.float32:
                return mapped
            reason = f"rows {mapped.dtype}{list(mapped.shape)}, not float32{list(expected)}"
            del mapped
        if not cached:
            raise ShardError(f"split tensor shard {path} is not a shard of this set ({reason})")
        path.unlink(missing_ok=True)  # fetched again by the next reader
        from grl_aecnn import storage

        raise ShardError(f"split tensor shard {storage.join(self.uri, path.name)} is not a shard of this set "
                         f"({reason})")

    def __getitem__(self, idx: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        """Rows `idx` (indices or a slice) as a new tensor, in the order asked for."""
        if self.data is not None:
            return self.data[idx]
        rows = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=np.float32)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(shard):
            pick = np.flatnonzero(shard == k)
            mapped = self._shard(int(k))
            out[pick] = mapped[rows[pick] - self.starts[k]]
            del mapped  # unmapped: the shard's pages leave this process's memory
        return torch.from_numpy(out)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive chunks of at most `size` rows."""
        for start in range(0, len(self), size):
            yield self[slice(start, min(start + size, len(self)))]


def publish(folder: Path, uri: str) -> None:
    """Copy a shard folder to ``uri`` on a store, its shards first and ``index.json`` last (so a
    half-copied set has no index there); nothing is copied when the store holds this set already."""
    from grl_aecnn import storage

    index = (Path(folder) / INDEX_FILE).read_text()
    if storage.read_text(storage.join(uri, INDEX_FILE)) == index:
        return
    for shard in sorted(Path(folder).glob("*.npy")):
        storage.upload_file(shard, storage.join(uri, shard.name))
    storage.upload_file(Path(folder) / INDEX_FILE, storage.join(uri, INDEX_FILE))


def chunk_rows(z: torch.Tensor | SplitArray, most: int) -> int:
    """Rows per chunk of a sequential pass: at most `most`, and at most `CHUNK_BYTES` of data."""
    row_bytes = 4 * int(np.prod(z.shape[1:]))
    return max(1, min(most, CHUNK_BYTES // row_bytes))


def sample_rows(z: torch.Tensor | SplitArray, budget_bytes: int, seed: int) -> torch.Tensor:
    """All rows when they fit in `budget_bytes`, else an evenly seeded random subset that does
    (statistics such as quantiser scales and symbol frequencies need a sample, not the set)."""
    n = len(z)
    rows = max(1, budget_bytes // (4 * int(np.prod(z.shape[1:]))))
    if rows >= n:
        return z[:] if isinstance(z, SplitArray) else z
    pick = np.sort(np.random.default_rng([seed, 7]).choice(n, rows, replace=False))
    return z[pick]
