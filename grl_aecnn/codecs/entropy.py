"""Static entropy coding of quantised symbols: per-channel frequencies fitted on training data,
coded with constriction's ANS coder.

Why ANS: after decoding exactly the expected number of symbols, a correct stream leaves the
coder empty; a damaged one almost never does. The decoder also re-encodes what it decoded
and insists on getting the same bytes, so only the encoder's own (canonical) output is ever
accepted. constriction emits 32-bit words; the last word's zero high bytes are dropped and
restored on decode (1-3 bytes saved per stream).
"""

from __future__ import annotations

import constriction
import numpy as np

from grl_aecnn.codecs.bitstream import BitstreamError

Categorical = constriction.stream.model.Categorical  # a compiled module: no submodule imports
AnsCoder = constriction.stream.stack.AnsCoder
PRIOR_COUNT = 0.5  # added to every count, so symbols unseen in training stay codable


class SymbolModel:
    """One categorical distribution over 0 .. alphabet-1 per channel."""

    def __init__(self, probs: np.ndarray):
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] < 2 or not np.all(probs > 0):
            raise ValueError("probs must be [channels, alphabet >= 2] and strictly positive")
        self.probs = probs / probs.sum(axis=1, keepdims=True)
        self._models = [Categorical(p, perfect=False) for p in self.probs]

    @property
    def channels(self) -> int:
        return self.probs.shape[0]

    @property
    def alphabet(self) -> int:
        return self.probs.shape[1]

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int) -> "SymbolModel":
        """Frequencies of [N, k, H, W] training symbols, per channel k."""
        k = symbols.shape[1]
        flat = np.moveaxis(symbols, 1, 0).reshape(k, -1)
        counts = np.stack([np.bincount(row, minlength=alphabet)[:alphabet] for row in flat])
        return cls(counts + PRIOR_COUNT)

    def information_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of [.., k, H, W] symbols under this model: the bound a coder can reach."""
        k = self.channels
        flat = np.moveaxis(symbols.reshape(-1, k, symbols.shape[-2] * symbols.shape[-1]), 1, 0).reshape(k, -1)
        return float(-sum(np.log2(self.probs[c][flat[c]]).sum() for c in range(k)))

    def encode(self, symbols: np.ndarray) -> bytes:
        """[k, H, W] int symbols -> payload bytes."""
        if symbols.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {symbols.shape[0]}")
        coder = AnsCoder()
        flat = symbols.reshape(self.channels, -1).astype(np.int32, copy=False)
        for c in range(self.channels - 1, -1, -1):  # a stack: encode backwards, decode forwards
            coder.encode_reverse(flat[c], self._models[c])
        raw = coder.get_compressed().tobytes()
        trimmed = raw.rstrip(b"\0")
        return raw[:max(len(trimmed), len(raw) - 3)]

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        """Payload bytes -> [k, H, W] int32 symbols; BitstreamError unless it decodes exactly."""
        k, h, w = shape
        if k != self.channels:
            raise BitstreamError(f"stream has {k} channels, the symbol model {self.channels}")
        padded = payload + b"\0" * (-len(payload) % 4)
        words = np.frombuffer(padded, dtype=np.uint32).copy()
        out = np.empty((k, h * w), dtype=np.int32)
        try:
            coder = AnsCoder(words)
            for c in range(k):
                out[c] = coder.decode(self._models[c], h * w)
            exact = coder.is_empty()
        except (ValueError, AssertionError, RuntimeError, OverflowError) as err:
            raise BitstreamError(f"payload does not decode: {err}") from None
        out = out.reshape(k, h, w)
        if not exact or self.encode(out) != payload:
            raise BitstreamError("payload does not decode to exactly the expected symbols (altered stream)")
        return out


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
