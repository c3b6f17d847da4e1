"""Cut a torchvision ResNet into a device-side head and a server-side tail.

Split points are named after the ResNet stages: ``stem`` (conv1, bn1, relu, maxpool),
``layer1`` .. ``layer4``. The head ends at the split point, the tail runs the rest of
the network up to the logits, so ``tail(head(x)) == model(x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from grl_aecnn.backbone.split_points import SPLIT_POINTS
_STAGE_MODULES = {
    "stem": ("conv1", "bn1", "relu", "maxpool"),
    "layer1": ("layer1",),
    "layer2": ("layer2",),
    "layer3": ("layer3",),
    "layer4": ("layer4",),
}


class Tail(nn.Sequential):
    """The rest of the ResNet after a split point, ending in the classifier."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self:
            if isinstance(module, nn.Linear):
                x = torch.flatten(x, 1)
            x = module(x)
        return x


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


def _check_split(split: str) -> None:
    if split not in SPLIT_POINTS:
        raise ValueError(f"unknown split point {split!r}; allowed: {', '.join(SPLIT_POINTS)}")


def split_resnet(model: nn.Module, split: str) -> tuple[nn.Sequential, Tail]:
    """Head and tail sharing the model's own modules (no copies: training one trains the model)."""
    _check_split(split)
    order = [name for stage in SPLIT_POINTS for name in _STAGE_MODULES[stage]]
    cut = order.index(_STAGE_MODULES[split][-1]) + 1
    head = nn.Sequential(*(getattr(model, name) for name in order[:cut]))
    tail = Tail(*(getattr(model, name) for name in order[cut:]), model.avgpool, model.fc)
    return head, tail


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
    head, tail = split_resnet(model, split)
    x = torch.zeros(1, 3, input_size, input_size)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        z = head(x)
    model.train(was_training)
    return SplitInfo(split, tuple(z.shape[1:]), count_flops(head, x), count_flops(tail, z))
