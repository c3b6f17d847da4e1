"""Backbone CNNs: torchvision ResNets, trained from scratch unless ``pretrained`` is asked for."""

from __future__ import annotations

from torch import nn
from torchvision import models

ARCHS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
}


def build_model(arch: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A torchvision ResNet with a ``num_classes``-way classifier.

    ``pretrained=True`` downloads torchvision's ImageNet weights (needs the internet) and
    replaces ``fc``; the default builds a randomly initialised network and never downloads.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    builder, weights = ARCHS[arch]
    if not pretrained:
        return builder(weights=None, num_classes=num_classes)
    model = builder(weights=weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model
