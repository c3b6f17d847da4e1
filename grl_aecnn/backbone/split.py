"""Cut a torchvision CNN into a device-side head and a server-side tail.

Split points (named in `split_points.py`) are stage boundaries: ResNet's ``stem`` (conv1, bn1,
relu, maxpool) and ``layer1`` .. ``layer4``; MobileNetV2's and EfficientNet-B0's ``stem`` and
``stage1`` .. ``stage3``. The head ends at the split point, the tail runs the rest of the
network up to the logits, so ``tail(head(x)) == model(x)`` for every family, and everything
downstream (codecs, FLOPs, profile, simulator) sees only a split tensor of some shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models

# MobileNetV2's `features` is a flat list of blocks; a stage ends where the next one starts.
_MOBILENET_V2_STAGE_ENDS = (1, 2, 4, 7, 11, 14, 17, 18, 19)
_MOBILE_SPLITS = ("stem", "stage1", "stage2", "stage3")


class Tail(nn.Sequential):
    """The rest of the network after a split point; the last module is the classifier."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self[:-1]:
            x = module(x)
        return self[-1](torch.flatten(x, 1))


@dataclass(frozen=True)
class SplitInfo:
    split: str
    shape: tuple[int, int, int]
    head_flops: float
    tail_flops: float

    @property
    def total_flops(self) -> float:
        return self.head_flops + self.tail_flops

    @property
    def float32_bytes(self) -> int:
        c, h, w = self.shape
        return 4 * c * h * w


def _stages(model: nn.Module) -> tuple[list[tuple[str, list[nn.Module]]], list[list[nn.Module]], list[nn.Module]]:
    """(split points with their modules, later stages, pooling + classifier), in network order."""
    if isinstance(model, models.ResNet):
        stem = [model.conv1, model.bn1, model.relu, model.maxpool]
        layers = [(f"layer{i}", [getattr(model, f"layer{i}")]) for i in range(1, 5)]
        return [("stem", stem), *layers], [], [model.avgpool, model.fc]
    if isinstance(model, models.MobileNetV2):
        ends = _MOBILENET_V2_STAGE_ENDS
        pool: nn.Module = nn.AdaptiveAvgPool2d(1)  # MobileNetV2 pools functionally in forward()
    elif isinstance(model, models.EfficientNet):
        ends = tuple(range(1, len(model.features) + 1))
        pool = model.avgpool
    else:
        raise ValueError(f"cannot split a {type(model).__name__}; supported: ResNet, MobileNetV2, EfficientNet")
    blocks = list(model.features)
    groups = [blocks[start:end] for start, end in zip((0, *ends[:-1]), ends)]
    n = len(_MOBILE_SPLITS)
    return list(zip(_MOBILE_SPLITS, groups[:n])), groups[n:], [pool, model.classifier]


def split_model(model: nn.Module, split: str) -> tuple[nn.Sequential, Tail]:
    """Head and tail sharing the model's own modules (no copies: training one trains the model).

    ResNet tails keep one child per module after the cut (stage by stage), MobileNet and
    EfficientNet tails one child per stage, so `tail_finetune: first` trains the next stage.
    """
    points, later, top = _stages(model)
    names = [name for name, _ in points]
    if split not in names:
        raise ValueError(f"unknown split point {split!r}; allowed: {', '.join(names)}")
    cut = names.index(split) + 1
    head = nn.Sequential(*(m for _, modules in points[:cut] for m in modules))
    rest = [modules for _, modules in points[cut:]] + later
    children = [m[0] if len(m) == 1 else nn.Sequential(*m) for m in rest]
    return head, Tail(*children, *top)


split_resnet = split_model  # the name the codec stage imports


def count_flops(module: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass for a batch of one (2 per multiply-add), counted by torch."""
    was_training = module.training
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(example[:1])
    module.train(was_training)
    return float(counter.get_total_flops())


def split_info(model: nn.Module, split: str, input_size: int) -> SplitInfo:
    """Shape of the split tensor and the FLOPs on each side, for one image."""
    head, tail = split_model(model, split)
    x = torch.zeros(1, 3, input_size, input_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = head(x)
    model.train(was_training)
    return SplitInfo(split, tuple(z.shape[1:]), count_flops(head, x), count_flops(tail, z))
