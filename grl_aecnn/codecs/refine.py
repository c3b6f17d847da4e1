"""Channel ranking refined on held-out split tensors: the attention shortlists, greedy selection
decides.

CBAM's mean weights saturate: most channels of a trained attention sit above 0.99, so the order
among them is noise, and with it the kept set (three attention seeds of the k=4 point can keep
disjoint sets). Greedy forward selection over the attention's top
``shortlist`` channels adds, one at a time, the channel whose set scores best as an untrained
AECNN codec: the point's quantiser and the decoder's closed-form linear prediction (its convs
start at zero), scored by the training task loss of the frozen tail on the validation tensors.
The result is again a ranking (the picks first, in pick order, then the rest in attention
order), so every point keeps a prefix and the sweep is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.training import Tensors, task_loss, teacher_logits

FIT_ROWS = 2048  # training tensors each candidate's scales and linear decoder are fitted on


@torch.no_grad()
def set_loss(channels: tuple[int, ...], tail: nn.Module, fit_z: torch.Tensor, val_z: torch.Tensor,
             val_y: torch.Tensor, teacher: torch.Tensor, cfg: CodecsConfig) -> float:
    """Task loss on the validation tensors through an untrained AECNN codec keeping `channels`."""
    codec = AECNNCodec(tuple(val_z.shape[1:]), channels, cfg.aecnn.bits[0], cfg.aecnn.decoder_width,
                       cfg.aecnn.scales, cfg.aecnn.clip_percentile).eval()
    codec.calibrate(fit_z)
    return task_loss(tail(codec(val_z)), teacher, val_y, cfg).item()


def refined_ranking(importance: np.ndarray, tail: nn.Module, train_z: Tensors, val_z: Tensors,
                    val_y: torch.Tensor, cfg: CodecsConfig, depth: int, seed: int) -> list[int]:
    """All channels, most important first: `depth` greedy picks among the attention's top
    ``cfg.aecnn.refine_shortlist``, then the rest in attention order."""
    tail.eval()
    order = [int(i) for i in np.argsort(-np.asarray(importance), kind="stable")]
    pool = order[:cfg.aecnn.refine_shortlist]
    depth = min(depth, len(pool))
    rows = np.sort(np.random.default_rng([seed, 11]).choice(len(train_z), min(FIT_ROWS, len(train_z)), replace=False))
    fit_z, val = train_z[rows], val_z[:]
    teacher = teacher_logits(tail, val)
    picked: list[int] = []
    for _ in range(depth):
        losses = [set_loss(tuple(sorted(picked + [c])), tail, fit_z, val, val_y, teacher, cfg) for c in pool]
        picked.append(pool.pop(int(np.argmin(losses))))
    return picked + [c for c in order if c not in picked]


def ranking_scores(ranking: list[int]) -> np.ndarray:
    """Importance scores whose descending order is `ranking` (what ``top_channels`` reads)."""
    scores = np.zeros(len(ranking))
    scores[ranking] = np.arange(len(ranking), 0, -1, dtype=float)
    return scores
