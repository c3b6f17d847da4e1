"""Static entropy coding of quantised symbols with constriction's ANS coder.

The model is a categorical distribution per channel and spatial cell, fitted on training
data: the split tensor is cut into a grid of at most ``grid x grid`` cells and every symbol
is coded with the frequencies of its channel in its cell. Centred datasets make activations
depend strongly on position (the border of a Fashion-MNIST item is background), so a
position-aware table saves about a fifth over one table per channel at no run-time cost;
``grid=1`` is the plain per-channel model.

Why ANS: after decoding exactly the expected number of symbols, a correct stream leaves the
coder empty; a damaged one almost never does. The decoder also re-encodes what it decoded
and insists on getting the same bytes, so only the encoder's own (canonical) output is ever
accepted. constriction emits 32-bit words; the last word's zero high bytes are dropped and
restored on decode (1-3 bytes saved per stream). A coder left in its initial state (all
symbols certain) emits no words; its payload is one zero byte, so no payload is empty.
"""

from __future__ import annotations

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

    def encode(self, symbols: np.ndarray) -> bytes:
        """[k, H, W] int symbols -> payload bytes."""
        if symbols.ndim != 3 or symbols.shape[0] != self.channels:
            raise ValueError(f"expected [{self.channels}, H, W] symbols, got shape {symbols.shape}")
        coder = AnsCoder()
        coder.encode_reverse(symbols.reshape(-1).astype(np.int32, copy=False), FAMILY, self.table(*symbols.shape[1:]))
        raw = coder.get_compressed().tobytes()
        trimmed = raw.rstrip(b"\0")
        return raw[:max(len(trimmed), len(raw) - 3)] or EMPTY_CODER

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Payload bytes -> [k, H, W] int32 symbols; BitstreamError unless it decodes exactly."""
        k, h, w = shape
        if k != self.channels:
            raise BitstreamError(f"stream has {k} channels, the symbol model {self.channels}")
        try:
            table = self.table(h, w)
        except ValueError as err:
            raise BitstreamError(str(err)) from None
        padded = b"" if payload == EMPTY_CODER else payload + b"\0" * (-len(payload) % 4)
        words = np.frombuffer(padded, dtype=np.uint32).copy()
        try:
            coder = AnsCoder(words)
            out = np.asarray(coder.decode(FAMILY, table), dtype=np.int32)
            exact = coder.is_empty()
        except (ValueError, AssertionError, RuntimeError, OverflowError) as err:
            raise BitstreamError(f"payload does not decode: {err}") from None
        out = out.reshape(k, h, w)
        if not exact or self.encode(out) != payload:
            raise BitstreamError("payload does not decode to exactly the expected symbols (altered stream)")
        return out


class SymbolTables(nn.Module):
    """A codec's static model as a float64 buffer ``probs`` ``[channels, gy, gx, alphabet]`` (zeros
    until fitted), so the tables travel in the codec's ``state_dict`` and a loaded codec codes
    exactly as the one that was saved."""

    def __init__(self, channels: int, plane: tuple[int, int], alphabet: int, grid: int):
        super().__init__()
        self.alphabet, self.grid = alphabet, grid
        cells = (min(grid, plane[0]), min(grid, plane[1]))
        self.register_buffer("probs", torch.zeros(channels, *cells, alphabet, dtype=torch.float64))
        self._model: SymbolModel | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_model", None))

    def fit(self, symbols: np.ndarray) -> None:
        """Fit on [N, k, H, W] training symbols."""
        self.set(SymbolModel.fit(symbols, self.alphabet, self.grid))

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
            self._model = SymbolModel(self.probs.numpy())
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
