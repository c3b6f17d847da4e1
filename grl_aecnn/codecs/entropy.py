"""Static entropy coding of quantised symbols with constriction's ANS coder.

The model is a categorical distribution per channel and spatial cell, fitted on training
data: the split tensor is cut into a grid of at most ``grid x grid`` cells and every symbol
is coded with the frequencies of its channel in its cell. Centred datasets make activations
depend strongly on position (the border of a Fashion-MNIST item is background), so a
position-aware table saves about a fifth over one table per channel at no run-time cost;
``grid=1`` is the plain per-channel model.

``ContextModel`` adds the neighbours: each symbol's table also depends on the (bucketed)
symbols at the same position in the previous kept channel, above it and left of it, all
decoded before it. Neighbouring activations are strongly correlated, so at 2 bits this codes
the kept channels in well under half the bytes of the per-cell model. Its decoder works
wavefront by wavefront (one anti-diagonal of one channel per coder call), since a symbol's
context is complete once the diagonal before it is decoded.

Why ANS: after decoding exactly the expected number of symbols, a correct stream leaves the
coder empty; a damaged one almost never does. The decoder also re-encodes what it decoded
and insists on getting the same bytes, so only the encoder's own (canonical) output is ever
accepted. constriction emits 32-bit words; the last word's zero high bytes are dropped and
restored on decode (1-3 bytes saved per stream). A coder left in its initial state (all
symbols certain) emits no words; its payload is one zero byte, so no payload is empty.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import constriction
import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.bitstream import BitstreamError

FAMILY = constriction.stream.model.Categorical(perfect=False)  # probabilities given per symbol
AnsCoder = constriction.stream.stack.AnsCoder
EMPTY_CODER = b"\0"  # the payload of a coder that emitted no words
PRIOR_COUNT = 0.5  # added to every count, so symbols unseen in training stay codable


def cell_index(h: int, w: int, grid: tuple[int, int]) -> np.ndarray:
    """Cell of every position of an h x w plane, row-major, for a gy x gx grid of cells."""
    gy, gx = grid
    rows = np.arange(h) * gy // h
    cols = np.arange(w) * gx // w
    return (rows[:, None] * gx + cols[None, :]).reshape(-1)


class SymbolModel:
    """Probabilities ``[channels, gy, gx, alphabet]``: one categorical per channel and cell."""

    def __init__(self, probs: np.ndarray):
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 4 or probs.shape[3] < 2 or not np.all(probs > 0):
            raise ValueError("probs must be [channels, grid rows, grid cols, alphabet >= 2] and strictly positive")
        self.probs = probs / probs.sum(axis=3, keepdims=True)
        self._tables: dict[tuple[int, int], np.ndarray] = {}

    @property
    def channels(self) -> int:
        return self.probs.shape[0]

    @property
    def alphabet(self) -> int:
        return self.probs.shape[3]

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int, grid: int = 1) -> "SymbolModel":
        """Frequencies of [N, k, H, W] training symbols per channel and cell (at most grid x grid cells)."""
        n, k, h, w = symbols.shape
        cells = (min(grid, h), min(grid, w))
        where = np.broadcast_to(cell_index(h, w, cells), (n, k, h * w))
        chan = np.broadcast_to(np.arange(k)[None, :, None], (n, k, h * w))
        flat = (chan * (cells[0] * cells[1]) + where) * alphabet + symbols.reshape(n, k, h * w)
        counts = np.bincount(flat.reshape(-1), minlength=k * cells[0] * cells[1] * alphabet)
        return cls(counts.reshape(k, *cells, alphabet) + PRIOR_COUNT)

    def table(self, h: int, w: int) -> np.ndarray:
        """Per-symbol probabilities ``[k*h*w, alphabet]`` (float32) for a [k, h, w] tensor."""
        if (h, w) not in self._tables:
            gy, gx = self.probs.shape[1:3]
            if gy > h or gx > w:
                raise ValueError(f"a {h}x{w} plane is smaller than the model's {gy}x{gx} grid")
            cells = self.probs.reshape(self.channels, gy * gx, -1)[:, cell_index(h, w, (gy, gx))]
            self._tables[(h, w)] = np.ascontiguousarray(cells.reshape(-1, self.alphabet), dtype=np.float32)
        return self._tables[(h, w)]

    def information_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of [.., k, H, W] symbols under this model: the bound a coder can reach."""
        h, w = symbols.shape[-2:]
        flat = symbols.reshape(-1, self.channels * h * w)
        probs = self.table(h, w)[np.arange(flat.shape[1])[None, :], flat]
        return float(-np.log2(probs.astype(np.float64)).sum())

    def _check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[0] != self.channels:
            raise ValueError(f"expected [{self.channels}, H, W] symbols, got shape {shape}")

    def encode(self, symbols: np.ndarray) -> bytes:
        """[k, H, W] int symbols -> payload bytes."""
        self._check(symbols.shape)
        return _finish(symbols.reshape(-1), self.table(*symbols.shape[1:]))

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Payload bytes -> [k, H, W] int32 symbols; BitstreamError unless it decodes exactly."""
        table = _planned(self, shape, self.table)
        return self._exact(payload, shape, lambda coder: coder.decode(FAMILY, table))

    def _exact(self, payload: bytes, shape: tuple[int, int, int], run: Callable[[Any], np.ndarray]) -> np.ndarray:
        """Decode with `run(coder)`; BitstreamError unless it leaves the coder empty and the
        symbols re-encode to exactly `payload` (only the encoder's own bytes are accepted)."""
        padded = b"" if payload == EMPTY_CODER else payload + b"\0" * (-len(payload) % 4)
        try:
            coder = AnsCoder(np.frombuffer(padded, dtype=np.uint32).copy())
            out = np.asarray(run(coder), dtype=np.int32).reshape(shape)
            exact = coder.is_empty()
        except (ValueError, AssertionError, RuntimeError, OverflowError) as err:
            raise BitstreamError(f"payload does not decode: {err}") from None
        if not exact or self.encode(out) != payload:
            raise BitstreamError("payload does not decode to exactly the expected symbols (altered stream)")
        return out


def _finish(sequence: np.ndarray, rows: np.ndarray) -> bytes:
    """ANS-code a symbol sequence under its per-symbol probability rows; trailing zero bytes
    of the last 32-bit word dropped."""
    coder = AnsCoder()
    coder.encode_reverse(sequence.astype(np.int32, copy=False), FAMILY, rows)
    raw = coder.get_compressed().tobytes()
    trimmed = raw.rstrip(b"\0")
    return raw[:max(len(trimmed), len(raw) - 3)] or EMPTY_CODER


def _planned(model: SymbolModel, shape: tuple[int, int, int], plan: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """`plan(H, W)` of a stream's symbol shape; BitstreamError when the model cannot code it."""
    if shape[0] != model.channels:
        raise BitstreamError(f"stream has {shape[0]} channels, the symbol model {model.channels}")
    try:
        return plan(*shape[1:])
    except ValueError as err:
        raise BitstreamError(str(err)) from None


CONTEXT_BUCKETS = 4  # each neighbour enters the context as one of this many equal symbol ranges
CONTEXT_MAX_ALPHABET = 16  # above this (8-bit codes) the tables would outgrow their training data


def context_count(alphabet: int) -> int:
    """Contexts per channel and cell: (previous channel, above, left), each bucketed."""
    return min(alphabet, CONTEXT_BUCKETS) ** 3


def _bucket(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    return symbols * min(alphabet, CONTEXT_BUCKETS) // alphabet


def _context_of(buckets: np.ndarray, at: tuple[np.ndarray, np.ndarray, np.ndarray], alphabet: int) -> np.ndarray:
    """Context codes from neighbour buckets (last axis: flat [k*H*W] plus a 0 for outside) at the
    (previous channel, above, left) indices ``at``."""
    prev, up, left = at
    n = min(alphabet, CONTEXT_BUCKETS)
    return (buckets[..., prev] * n + buckets[..., up]) * n + buckets[..., left]


def contexts(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    """Context of every symbol of [..., k, H, W], flat [..., k*H*W], from its neighbours decoded
    before it (0 outside)."""
    b = _bucket(symbols.reshape(*symbols.shape[:-3], -1), alphabet)
    padded = np.concatenate([b, np.zeros((*b.shape[:-1], 1), dtype=b.dtype)], axis=-1)
    return _context_of(padded, neighbours(*symbols.shape[-3:]), alphabet)


@functools.lru_cache(maxsize=64)
def neighbours(k: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of every symbol's previous-channel, above and left neighbours in [k, H, W]
    (k*H*W where there is none)."""
    c, i, j = np.unravel_index(np.arange(k * h * w), (k, h, w))
    flat, none = np.arange(k * h * w), k * h * w
    return (np.where(c > 0, flat - h * w, none), np.where(i > 0, flat - w, none), np.where(j > 0, flat - 1, none))


@functools.lru_cache(maxsize=64)
def wavefronts(k: int, h: int, w: int) -> list[np.ndarray]:
    """Flat indices into [k, H, W] in coding order: channel by channel, one anti-diagonal
    (i + j = d, increasing i) at a time. Every symbol's context lies in earlier groups."""
    i, j = np.divmod(np.arange(h * w), w)
    order = np.lexsort((i, i + j))
    diag = (i + j)[order]
    groups = np.split(order, np.flatnonzero(np.diff(diag)) + 1)
    return [c * h * w + g for c in range(k) for g in groups]


class ContextModel(SymbolModel):
    """Probabilities ``[channels, gy, gx, contexts, alphabet]``: one categorical per channel,
    cell and neighbour context (see ``contexts``)."""

    def __init__(self, probs: np.ndarray):
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 5 or probs.shape[4] < 2 or probs.shape[3] != context_count(probs.shape[4]) \
                or not np.all(probs > 0):
            raise ValueError("probs must be [channels, grid rows, grid cols, contexts, alphabet >= 2], with "
                             "the alphabet's context count, and strictly positive")
        self.probs = probs / probs.sum(axis=4, keepdims=True)
        self._flat = np.ascontiguousarray(self.probs.reshape(-1, probs.shape[4]), dtype=np.float32)
        self._bases: dict[tuple[int, int], np.ndarray] = {}

    @property
    def alphabet(self) -> int:
        return self.probs.shape[4]

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int, grid: int = 1) -> "ContextModel":
        """Frequencies of [N, k, H, W] training symbols per channel, cell and context."""
        n, k, h, w = symbols.shape
        cells, ctx = (min(grid, h), min(grid, w)), context_count(alphabet)
        base = _bases(k, h, w, cells, ctx)
        flat = (base[None] + contexts(symbols, alphabet)) * alphabet + symbols.reshape(n, -1)
        counts = np.bincount(flat.reshape(-1), minlength=k * cells[0] * cells[1] * ctx * alphabet)
        return cls(counts.reshape(k, *cells, ctx, alphabet) + PRIOR_COUNT)

    def _base(self, h: int, w: int) -> np.ndarray:
        """First table row of every symbol's (channel, cell), flat over [k, H, W]."""
        if (h, w) not in self._bases:
            gy, gx = self.probs.shape[1:3]
            if gy > h or gx > w:
                raise ValueError(f"a {h}x{w} plane is smaller than the model's {gy}x{gx} grid")
            self._bases[(h, w)] = _bases(self.channels, h, w, (gy, gx), self.probs.shape[3])
        return self._bases[(h, w)]

    def rows(self, symbols: np.ndarray) -> np.ndarray:
        """Per-symbol probabilities ``[k*h*w, alphabet]`` of a [k, h, w] tensor, from its contexts."""
        return self._flat[self._base(*symbols.shape[1:]) + contexts(symbols, self.alphabet)]

    def information_bits(self, symbols: np.ndarray) -> float:
        flat = symbols.reshape(-1, self.channels, *symbols.shape[-2:])
        return float(sum(-np.log2(self.rows(s)[np.arange(s.size), s.reshape(-1)].astype(np.float64)).sum()
                         for s in flat))

    def encode(self, symbols: np.ndarray) -> bytes:
        self._check(symbols.shape)
        order = np.concatenate(wavefronts(*symbols.shape))
        return _finish(symbols.reshape(-1)[order], self.rows(symbols)[order])

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        base = _planned(self, shape, self._base)
        at = neighbours(*shape)
        out = np.zeros(shape[0] * shape[1] * shape[2], dtype=np.int32)
        seen = np.zeros(len(out) + 1, dtype=np.int64)  # decoded symbols' buckets; the last entry: outside

        def run(coder: Any) -> np.ndarray:
            for group in wavefronts(*shape):
                ctx = _context_of(seen, tuple(a[group] for a in at), self.alphabet)
                out[group] = coder.decode(FAMILY, self._flat[base[group] + ctx])
                seen[group] = _bucket(out[group], self.alphabet)
            return out

        return self._exact(payload, shape, run)


def _bases(k: int, h: int, w: int, cells: tuple[int, int], ctx: int) -> np.ndarray:
    where = cell_index(h, w, cells)
    return ((np.arange(k)[:, None] * (cells[0] * cells[1]) + where[None]) * ctx).reshape(-1)


class SymbolTables(nn.Module):
    """A codec's static model as a float64 buffer ``probs`` (zeros until fitted):
    ``[channels, gy, gx, alphabet]``, or with ``context`` (alphabets up to
    ``CONTEXT_MAX_ALPHABET``) ``[channels, gy, gx, contexts, alphabet]``. The tables travel in
    the codec's ``state_dict``, so a loaded codec codes exactly as the one that was saved."""

    def __init__(self, channels: int, plane: tuple[int, int], alphabet: int, grid: int, context: bool = False):
        super().__init__()
        self.alphabet, self.grid = alphabet, grid
        self.kind = ContextModel if context and alphabet <= CONTEXT_MAX_ALPHABET else SymbolModel
        cells = (min(grid, plane[0]), min(grid, plane[1]))
        per_cell = (context_count(alphabet),) if self.kind is ContextModel else ()
        self.register_buffer("probs", torch.zeros(channels, *cells, *per_cell, alphabet, dtype=torch.float64))
        self._model: SymbolModel | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_model", None))

    def fit(self, symbols: np.ndarray) -> None:
        """Fit on [N, k, H, W] training symbols."""
        self.set(self.kind.fit(symbols, self.alphabet, self.grid))

    def set(self, model: SymbolModel) -> None:
        """Take a fitted model's tables; the codec then codes as it will after a save and load."""
        if tuple(model.probs.shape) != tuple(self.probs.shape):
            raise ValueError(f"symbol model of shape {model.probs.shape}, expected {tuple(self.probs.shape)}")
        self.probs.copy_(torch.from_numpy(model.probs))
        self._model = None  # rebuilt from the buffer, exactly as after loading

    @property
    def model(self) -> SymbolModel | None:
        """The fitted (or loaded) model; None before either."""
        if self._model is None and bool(torch.all(self.probs > 0)):
            self._model = self.kind(self.probs.numpy())
        return self._model


def pack_raw(symbols: np.ndarray, bits: int) -> bytes:
    """Fixed-length packing, b bits per symbol, MSB first (no entropy coding)."""
    flat = symbols.reshape(-1).astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((flat[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def unpack_raw(payload: bytes, shape: tuple[int, int, int], bits: int) -> np.ndarray:
    n = shape[0] * shape[1] * shape[2]
    if len(payload) != (n * bits + 7) // 8:
        raise BitstreamError(f"raw payload is {len(payload)} bytes, expected {(n * bits + 7) // 8}")
    table = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int32)
    return (table.astype(np.int32) @ weights).reshape(shape)
