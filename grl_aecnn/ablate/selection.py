"""Channel rankings for the selection ablation: the paper's CBAM attention, squeeze-and-excitation
attention (both trained in front of the frozen tail by ``train_attention``), and training-free
scores of the split tensors (L1 norm, variance, random)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.aecnn import ChannelAttention
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.training import train_attention


class SEAttention(ChannelAttention):
    """Squeeze-and-excitation (Hu et al.): w = sigmoid(MLP(GAP(z))); CBAM adds a max-pooled branch."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(z.mean(dim=(2, 3))))


def channel_importance(method: str, tail: nn.Module, z: torch.Tensor, y: torch.Tensor, cfg: CodecsConfig,
                       seed: int) -> np.ndarray:
    """Importance of each channel of the training split tensors z [N, C, H, W] (higher: kept first)."""
    if method == "cbam":
        return train_attention(tail, z, y, cfg, seed)
    if method == "se":
        return train_attention(tail, z, y, cfg, seed, block=SEAttention)
    if method == "l1":
        return z.abs().mean(dim=(0, 2, 3)).numpy()
    if method == "variance":
        return z.transpose(0, 1).reshape(z.shape[1], -1).var(dim=1).numpy()
    if method == "random":
        return np.random.default_rng(seed).random(z.shape[1])
    raise ValueError(f"unknown channel selection {method!r}")
