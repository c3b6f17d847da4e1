"""Step-by-step codec training on precomputed split tensors (the head is frozen and never run).

1. attention: a CBAM channel-attention module in front of the frozen tail; its mean weight
   over the training set ranks the channels (done once per split, shared by all AECNN points);
2. feature: the codec (AECNN's recovery decoder, or a BottleNet++ / DeepJSCC encoder-decoder)
   alone, on the feature MSE: a cheap warm start, the tail is never run;
3. codec: the codec with the tail frozen, on task loss + feature MSE;
4. joint: codec and (part of) the tail together on the task loss.
`codecs.schedule` sets the epochs of each step.

The task loss distils the clean backbone: the tail's logits on the uncompressed split tensor
are the teacher (computed once; the head is frozen, so they never change). Soft targets say
how alike the classes look, which a few epochs of hard labels cannot. Each step runs a
one-cycle learning-rate schedule.

Split tensors come as a tensor or as a `data_pipelines.shards.SplitArray` read per batch;
passes over the whole set go chunk by chunk, and the quantiser and symbol statistics are fitted
on at most `FIT_BYTES` of rows, so memory is bounded by a batch, not by the data set.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data_pipelines.shards import SplitArray, chunk_rows, sample_rows
from grl_aecnn.codecs.aecnn import ChannelAttention
from grl_aecnn.codecs.base import Codec
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import tail_prefixes

Logger = Callable[[str, dict[str, float]], None]
OnStep = Callable[[int, torch.Tensor], None]  # (steps done, torch RNG state): a checkpoint
STEPS = ("feature", "codec", "joint")  # steps 2-4 above, in order
FIT_BYTES = 256 * 2**20  # split tensors a quantiser / symbol model is fitted on, at most
Tensors = torch.Tensor | SplitArray


def _batches(n: int, batch_size: int, epochs: float, seed: int) -> list[torch.Tensor]:
    """Index batches for `epochs` passes over n samples; a fractional pass takes a random subset."""
    gen = torch.Generator().manual_seed(seed)
    total = max(1, round(epochs * n))
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-total // n))])[:total]
    return list(order.split(batch_size))


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


def train_attention(tail: nn.Module, z: Tensors, y: torch.Tensor, cfg: CodecsConfig, seed: int,
                    block: type[nn.Module] = ChannelAttention) -> np.ndarray:
    """Channel importance at the split: mean attention weight over the training set. `block`
    (channels, reduction) -> [N, C] weights; CBAM by default, other blocks for the ablations."""
    torch.manual_seed(seed)
    _freeze(tail, [])
    att = block(z.shape[1], cfg.aecnn.attention_reduction)
    opt = torch.optim.Adam(att.parameters(), lr=cfg.lr)
    batches = _batches(len(z), cfg.batch_size, cfg.schedule.attention, seed)
    with _progress(sum(map(len, batches)), "attention") as bar:
        for idx in batches:
            zb = z[idx]
            w = att(zb)
            loss = F.cross_entropy(tail(zb * w[:, :, None, None]), y[idx]) + cfg.aecnn.attention_sparsity * w.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(len(idx))
    with torch.no_grad():
        return torch.cat([att(chunk) for chunk in z.split(chunk_rows(z, 512))]).mean(0).numpy()


def task_loss(logits: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor,
              cfg: CodecsConfig) -> torch.Tensor:
    """(1 - w) cross-entropy + w T^2 KL(teacher || student) at temperature T (Hinton et al.)."""
    w, t = cfg.distillation, cfg.distill_temperature
    ce = F.cross_entropy(logits, labels)
    if w == 0:
        return ce
    kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t
    return (1 - w) * ce + w * kd


@torch.no_grad()
def teacher_logits(tail: nn.Module, z: Tensors) -> torch.Tensor:
    tail.eval()
    return torch.cat([tail(chunk) for chunk in z.split(chunk_rows(z, 512))])


def needs_teacher(cfg: CodecsConfig) -> bool:
    """Whether any training step distils the clean tail's logits."""
    return cfg.distillation > 0 and (cfg.schedule.codec > 0 or cfg.schedule.joint > 0)


def train_codec(codec: Codec, tail: nn.Module, z: Tensors, y: torch.Tensor, cfg: CodecsConfig,
                seed: int, log: Logger, teacher: torch.Tensor | None = None, start: int = 0,
                on_step: OnStep | None = None, rng_state: torch.Tensor | None = None) -> list[str]:
    """Steps 2-4 (after the codec's `prepare`); the codec's `finish` (its entropy model) at the end.
    `teacher` holds the clean tail's logits on z (computed here if not given; the sweep computes
    them once for all trials). `start`: steps already done (a resumed codec, prepared and with
    the tail untouched) and `rng_state` the torch RNG state saved with them, so a resumed trial
    continues bit for bit as an uninterrupted one; `on_step(n, rng_state)` is called when n
    steps are done and the tail is still untouched, for a checkpoint. Data order comes from
    generators seeded by `seed` and the step. Returns the tail modules trained."""
    if start == 0:
        torch.manual_seed(seed)
        codec.prepare(sample_rows(z, FIT_BYTES, seed))
    elif rng_state is None:
        raise ValueError("a resumed codec needs the RNG state saved with its checkpoint")
    else:
        torch.set_rng_state(rng_state)
    if teacher is None and needs_teacher(cfg):
        teacher = teacher_logits(tail, z)
    plan = cfg.schedule
    steps = [("feature", None, plan.feature), ("codec", [], plan.codec),
             ("joint", tail_prefixes(tail, cfg.tail_finetune), plan.joint)]
    for step, (name, trainable, epochs) in enumerate(steps):
        if epochs == 0 or step < start:
            continue
        params = list(codec.parameters()) + _freeze(tail, trainable or [])
        if not params:  # a codec without weights (an ablation's fixed recovery) and a frozen tail
            continue
        opt = torch.optim.Adam(params, lr=cfg.lr)
        batches = _batches(len(z), cfg.batch_size, epochs, seed + step)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=len(batches))
        codec.train()
        total, count = np.zeros(3), 0
        with _progress(sum(map(len, batches)), name) as bar:
            for idx in batches:
                zb, yb = z[idx], y[idx]
                rec = codec(zb)
                mse = F.mse_loss(rec, zb)
                if trainable is None:
                    loss, task, hits = mse, torch.zeros(()), 0
                else:
                    logits = tail(rec)
                    task = task_loss(logits, None if teacher is None else teacher[idx], yb, cfg)
                    loss = task + (cfg.feature_loss_weight * mse if name == "codec" else 0.0)
                    hits = (logits.argmax(1) == yb).sum().item()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += [task.item() * len(idx), mse.item() * len(idx), hits]
                count += len(idx)
                bar.update(len(idx))
        metrics = {"feature_mse": total[1] / count}
        if trainable is not None:
            metrics.update(task_loss=total[0] / count, train_accuracy=total[2] / count)
        log(name, metrics)
        if on_step is not None and step + 1 < len(steps):
            on_step(step + 1, torch.get_rng_state())
    for p in tail.parameters():
        p.requires_grad_(False)
    codec.eval()
    codec.finish(sample_rows(z, FIT_BYTES, seed))
    return steps[2][1] if plan.joint > 0 else []


@torch.no_grad()
def accuracy(codec: Codec | None, tail: nn.Module, z: Tensors, y: torch.Tensor) -> float:
    """Top-1 through codec (its training path, no bitstream) and tail; None = clean tail."""
    tail.eval()
    if codec is not None:
        codec.eval()
    hits = 0
    rows = chunk_rows(z, 256)
    for zb, yb in zip(z.split(rows), y.split(rows)):
        hits += (tail(zb if codec is None else codec(zb)).argmax(1) == yb).sum().item()
    return hits / len(y)
