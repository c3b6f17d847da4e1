"""Uniform b-bit quantisation of non-negative split tensors on [0, scale] per channel.

ResNet split tensors come out of a ReLU, so each channel is quantised on [0, scale]. Two
ways to get the scale:

- ``calibrated``: a per-channel clipping scale fixed from training data (a high percentile
  of the channel's values), stored with the codec, so nothing about it travels. At 2 bits a
  per-sample maximum spends the levels on rare peaks; a percentile clip keeps them where the
  values are, and the header shrinks by a byte per channel.
- ``per-sample``: the channel maximum of each sample, log-coded in one header byte,
  ``scale = 2 ** ((code - 128) / 8)`` (9 % steps from 2^-16 to 2^15.9), rounded up so nothing
  is clipped: robust to inputs unlike the training data.

Encoder, decoder and training use this module, so they agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

SCALE_TABLE = (2.0 ** ((np.arange(256, dtype=np.float64) - 128) / 8)).astype(np.float32)
_SCALE_TABLE_T = torch.from_numpy(SCALE_TABLE)
MIN_SCALE = float(SCALE_TABLE[0])


def levels(bits: int) -> int:
    return (1 << bits) - 1


def calibrate(kept: np.ndarray, percentile: float) -> np.ndarray:
    """Per-channel clipping scales float32[k] of training tensors [N, k, H, W]."""
    per_channel = np.moveaxis(np.asarray(kept, dtype=np.float32), 1, 0).reshape(kept.shape[1], -1)
    return np.maximum(np.percentile(per_channel, percentile, axis=1), MIN_SCALE).astype(np.float32)


def scale_codes(x: np.ndarray) -> np.ndarray:
    """Per-sample codes for a [k, H, W] tensor: the smallest table scale >= the channel maximum."""
    peak = x.reshape(x.shape[0], -1).max(axis=1)
    return np.minimum(np.searchsorted(SCALE_TABLE, peak), 255).astype(np.uint8)


def code_scales(codes: np.ndarray) -> np.ndarray:
    return SCALE_TABLE[codes]


def quantize(x: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Symbols in 0 .. 2^bits - 1 of a [k, H, W] tensor (negative values map to 0, larger
    than the scale to the top level)."""
    step = scales[:, None, None] / np.float32(levels(bits))
    return np.clip(np.rint(x / step), 0, levels(bits)).astype(np.int32)


def dequantize(symbols: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    step = scales[:, None, None] / np.float32(levels(bits))
    return symbols.astype(np.float32) * step


def fake_quantize(x: torch.Tensor, bits: int, scales: torch.Tensor | None = None) -> torch.Tensor:
    """The same quantise-dequantise on a batch [N, k, H, W] for training (no gradient needed:
    the tensor comes from the frozen head); ``scales=None`` is the per-sample mode."""
    if scales is None:
        peak = x.flatten(2).amax(dim=2)
        codes = torch.searchsorted(_SCALE_TABLE_T, peak.contiguous()).clamp_(max=255)
        step = (_SCALE_TABLE_T[codes] / levels(bits))[..., None, None]
    else:
        step = (scales / levels(bits))[None, :, None, None]
    return torch.clamp(torch.round(x / step), 0, levels(bits)) * step
