"""Uniform b-bit quantisation of non-negative split tensors with one-byte per-channel scales.

ResNet split tensors come out of a ReLU, so each channel is quantised on [0, scale] and only
the scale travels. The scale is log-coded in one byte, ``scale = 2 ** ((code - 128) / 8)``
(9 % steps from 2^-16 to 2^16), rounded up so that no value is clipped: a byte per channel
instead of a float keeps the header small. Encoder, decoder and training use this module,
so they agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

SCALE_TABLE = (2.0 ** ((np.arange(256, dtype=np.float64) - 128) / 8)).astype(np.float32)
_SCALE_TABLE_T = torch.from_numpy(SCALE_TABLE)


def levels(bits: int) -> int:
    return (1 << bits) - 1


def scale_codes(x: np.ndarray) -> np.ndarray:
    """Per-channel codes for a [k, H, W] tensor: the smallest scale >= the channel maximum."""
    peak = x.reshape(x.shape[0], -1).max(axis=1)
    return np.minimum(np.searchsorted(SCALE_TABLE, peak), 255).astype(np.uint8)


def quantize(x: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """Symbols in 0 .. 2^bits - 1 (negative values map to 0)."""
    step = SCALE_TABLE[codes][:, None, None] / np.float32(levels(bits))
    return np.clip(np.rint(x / step), 0, levels(bits)).astype(np.int32)


def dequantize(symbols: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    step = SCALE_TABLE[codes][:, None, None] / np.float32(levels(bits))
    return symbols.astype(np.float32) * step


def fake_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The same quantise-dequantise on a batch [N, k, H, W] for training (no gradient needed:
    the tensor comes from the frozen head)."""
    peak = x.flatten(2).amax(dim=2)
    codes = torch.searchsorted(_SCALE_TABLE_T, peak.contiguous()).clamp_(max=255)
    step = (_SCALE_TABLE_T[codes] / levels(bits))[..., None, None]
    return torch.clamp(torch.round(x / step), 0, levels(bits)) * step
