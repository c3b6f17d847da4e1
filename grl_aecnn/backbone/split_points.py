"""Split points of the supported CNN families and the channel count of the tensor at each.

Kept free of torch so that a config can be checked against the split (the split point exists
for the arch, AECNN's kept channels fit) before anything is trained; `split.py` cuts the real
models at these points and a test checks the counts against them.

ResNets split after the stem (conv1..maxpool) or a residual stage ``layer1`` .. ``layer4``.
MobileNetV2 and EfficientNet-B0 split after the stem convolution or one of their first three
inverted-residual stages (``stage1`` .. ``stage3``: the blocks up to the first 16-, 24- and
32/40-channel outputs), the early cut points where the tensor is still small enough to send.
"""

from __future__ import annotations

RESNET_SPLITS = ("stem", "layer1", "layer2", "layer3", "layer4")
MOBILE_SPLITS = ("stem", "stage1", "stage2", "stage3")

# arch -> split point -> channels of the split tensor, in network order
SPLIT_CHANNELS: dict[str, dict[str, int]] = {
    "resnet18": dict(zip(RESNET_SPLITS, (64, 64, 128, 256, 512))),
    "resnet50": dict(zip(RESNET_SPLITS, (64, 256, 512, 1024, 2048))),
    "mobilenet_v2": dict(zip(MOBILE_SPLITS, (32, 16, 24, 32))),
    "efficientnet_b0": dict(zip(MOBILE_SPLITS, (32, 16, 24, 40))),
}


def split_points(arch: str) -> tuple[str, ...]:
    """The split points of ``arch``, input side first."""
    return tuple(SPLIT_CHANNELS[arch])

