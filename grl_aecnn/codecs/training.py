"""Step-by-step codec training on precomputed split tensors (the head is frozen and never run).

1. attention: a CBAM channel-attention module in front of the frozen tail; its mean weight
   over the training set ranks the channels (done once per split, shared by all AECNN points);
2. codec: the codec (AECNN's recovery decoder, or a BottleNet++ / DeepJSCC encoder-decoder)
   with the tail frozen, on task loss + feature MSE;
3. joint: codec and (part of) the tail together on the task loss.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from grl_aecnn.codecs.aecnn import ChannelAttention
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import tail_prefixes

Logger = Callable[[str, dict[str, float]], None]


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        yield from torch.randperm(n, generator=gen).split(batch_size)


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)


def _freeze(tail: nn.Module, trainable: list[str]) -> list[nn.Parameter]:
    """Tail in eval mode (its BatchNorm statistics stay those of the backbone); only the named
    children get gradients."""
    tail.eval()
    params = []
    for name, child in tail.named_children():
        for p in child.parameters():
            p.requires_grad_(name in trainable)
            if name in trainable:
                params.append(p)
    return params


def train_attention(tail: nn.Module, z: torch.Tensor, y: torch.Tensor, cfg: CodecsConfig, seed: int) -> np.ndarray:
    """Channel importance at the split: mean attention weight over the training set."""
    torch.manual_seed(seed)
    _freeze(tail, [])
    att = ChannelAttention(z.shape[1], cfg.aecnn.attention_reduction)
    opt = torch.optim.Adam(att.parameters(), lr=cfg.lr)
    with _progress(cfg.epochs_per_step * len(z), "attention") as bar:
        for idx in _batches(len(z), cfg.batch_size, cfg.epochs_per_step, seed):
            w = att(z[idx])
            loss = F.cross_entropy(tail(z[idx] * w[:, :, None, None]), y[idx]) + cfg.aecnn.attention_sparsity * w.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(len(idx))
    with torch.no_grad():
        return torch.cat([att(chunk) for chunk in z.split(512)]).mean(0).numpy()


def train_codec(codec: nn.Module, tail: nn.Module, z: torch.Tensor, y: torch.Tensor, cfg: CodecsConfig,
                seed: int, log: Logger) -> list[str]:
    """Steps 2 and 3; fits the codec's symbol model at the end. Returns the tail modules trained."""
    torch.manual_seed(seed)
    steps = [("codec", [], cfg.feature_loss_weight), ("joint", tail_prefixes(tail, cfg.tail_finetune), 0.0)]
    for step, (name, trainable, mse_weight) in enumerate(steps):
        params = list(codec.parameters()) + _freeze(tail, trainable)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        codec.train()
        total, count = np.zeros(3), 0
        with _progress(cfg.epochs_per_step * len(z), name) as bar:
            for idx in _batches(len(z), cfg.batch_size, cfg.epochs_per_step, seed + step):
                zb, yb = z[idx], y[idx]
                rec = codec(zb)
                logits = tail(rec)
                task = F.cross_entropy(logits, yb)
                mse = F.mse_loss(rec, zb)
                loss = task + mse_weight * mse
                opt.zero_grad()
                loss.backward()
                opt.step()
                hits = (logits.argmax(1) == yb).sum().item()
                total += [task.item() * len(idx), mse.item() * len(idx), hits]
                count += len(idx)
                bar.update(len(idx))
        log(name, {"task_loss": total[0] / count, "feature_mse": total[1] / count, "train_accuracy": total[2] / count})
    for p in tail.parameters():
        p.requires_grad_(False)
    codec.eval()
    if hasattr(codec, "fit_symbols"):
        codec.fit_symbols(z)
    return steps[1][1]


@torch.no_grad()
def accuracy(codec: nn.Module | None, tail: nn.Module, z: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 through codec (its training path, no bitstream) and tail; None = clean tail."""
    tail.eval()
    if codec is not None:
        codec.eval()
    hits = 0
    for zb, yb in zip(z.split(256), y.split(256)):
        hits += (tail(zb if codec is None else codec(zb)).argmax(1) == yb).sum().item()
    return hits / len(y)
