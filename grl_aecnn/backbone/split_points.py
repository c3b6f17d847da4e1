"""Split points of the supported ResNets and the channel count of the tensor at each.

Kept free of torch so that a config can be checked against the split (e.g. AECNN's kept
channels) before anything is trained; `split.py` cuts the real models at these points and
a test checks the counts against them.
"""

from __future__ import annotations

SPLIT_POINTS = ("stem", "layer1", "layer2", "layer3", "layer4")

SPLIT_CHANNELS: dict[str, dict[str, int]] = {
    "resnet18": {"stem": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}
