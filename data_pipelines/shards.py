"""Split tensors as a folder of .npy shards, written batch by batch and read by batch.

At the paper's scale (64x56x56 float32 per image, thousands of images) no process may hold the
whole set, so the head's outputs go to disk shard by shard and every reader maps only the
shards its batch touches, copies those rows and unmaps them again: a reader's memory is bounded
by its batch. Sets small enough to hold (`IN_MEMORY_BYTES`) are read whole once, which is faster
and offers the same interface. `SplitArray` mimics the two tensor operations the codec code
uses, ``z[idx]`` and ``z.split(n)``, so training code runs unchanged on a plain tensor too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

INDEX_FILE = "index.json"
IN_MEMORY_BYTES = 256 * 2**20  # sets up to this size are held whole by each reader
CHUNK_BYTES = 64 * 2**20  # rows read at once by sequential passes (teacher logits, accuracy)


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
        np.save(self.partial / f"{len(self.counts):05d}.npy", rows)
        self.counts.append(len(rows))

    def close(self) -> "SplitArray":
        if self.row_shape is None:
            raise ValueError(f"no rows written to {self.folder}")
        (self.partial / INDEX_FILE).write_text(json.dumps({"row_shape": self.row_shape, "counts": self.counts}))
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.partial, self.folder)
        return SplitArray.open(self.folder)


class SplitArray:
    """Rows [N, *row_shape] float32, held in memory or read per batch from shards."""

    def __init__(self, folder: Path | None, counts: list[int], row_shape: tuple[int, ...],
                 data: torch.Tensor | None = None) -> None:
        self.folder, self.row_shape, self.data = folder, tuple(row_shape), data
        self.counts = list(counts)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @classmethod
    def open(cls, folder: Path, in_memory_bytes: int = IN_MEMORY_BYTES) -> "SplitArray":
        """The shards in `folder`; read whole now when they fit in `in_memory_bytes`."""
        index = json.loads((Path(folder) / INDEX_FILE).read_text())
        array = cls(Path(folder), index["counts"], tuple(index["row_shape"]))
        if array.nbytes <= in_memory_bytes:
            data = torch.from_numpy(np.concatenate([array._shard(k)[:] for k in range(len(array.counts))]))
            return cls(None, array.counts, array.row_shape, data)
        return array

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _shard(self, k: int) -> np.ndarray:
        return np.load(self.folder / f"{k:05d}.npy", mmap_mode="r")

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
