"""Channel rankings for the selection ablation: the paper's CBAM attention, CBAM refined by greedy
selection on the validation tensors (``grl_aecnn/codecs/refine.py``), squeeze-and-excitation
attention (trained in front of the frozen tail by ``train_attention``), and training-free
scores of the split tensors (L1 norm, variance, random)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.aecnn import ChannelAttention
from grl_aecnn.codecs.refine import ranking_scores, refined_ranking
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.training import Tensors, chunk_rows, train_attention


class SEAttention(ChannelAttention):
    """Squeeze-and-excitation (Hu et al.): w = sigmoid(MLP(GAP(z))); CBAM adds a max-pooled branch."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(z.mean(dim=(2, 3))))


def _channel_sums(z: Tensors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per-channel sums of |z|, z and z^2 (float64) and the values per channel, chunk by chunk:
    the split tensors may be shards on disk (``SplitArray``), read one chunk at a time."""
    sums = torch.zeros(3, z.shape[1], dtype=torch.float64)
    for chunk in z.split(chunk_rows(z, 4096)):
        chunk = chunk.double().transpose(0, 1).reshape(z.shape[1], -1)
        sums += torch.stack([chunk.abs().sum(1), chunk.sum(1), (chunk * chunk).sum(1)])
    return sums[0], sums[1], sums[2], len(z) * int(np.prod(z.shape[2:]))


def channel_importance(method: str, tail: nn.Module, tensors: dict[str, Tensors], cfg: CodecsConfig,
                       seed: int, depth: int) -> np.ndarray:
    """Importance of each channel of the training split tensors [N, C, H, W] (higher: kept first);
    `depth`: channels the refined ranking picks (the ablation's k)."""
    z, y = tensors["train_z"], tensors["train_y"]
    if method == "cbam":
        return train_attention(tail, z, y, cfg, seed)
    if method == "refined":
        attention = train_attention(tail, z, y, cfg, seed)
        return ranking_scores(refined_ranking(attention, tail, z, tensors["val_z"], tensors["val_y"], cfg, depth, seed))
    if method == "se":
        return train_attention(tail, z, y, cfg, seed, block=SEAttention)
    if method in ("l1", "variance"):
        absolute, total, square, count = _channel_sums(z)
        if method == "l1":
            return (absolute / count).numpy()
        return ((square - total * total / count) / (count - 1)).numpy()  # unbiased, as torch.var
    if method == "random":
        return np.random.default_rng(seed).random(z.shape[1])
    raise ValueError(f"unknown channel selection {method!r}")
