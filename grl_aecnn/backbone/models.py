"""Backbone CNNs from torchvision, trained from scratch unless ``pretrained`` is asked for."""

from __future__ import annotations

from torch import nn
from torchvision import models

ARCHS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2),
    "mobilenet_v2": (models.mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V2),
    "efficientnet_b0": (models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1),
}


def classifier(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the final linear layer and that layer's name in it."""
    if isinstance(model, models.ResNet):
        return model, "fc"
    return model.classifier, str(len(model.classifier) - 1)


def build_model(arch: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A torchvision CNN with a ``num_classes``-way classifier.

    ``pretrained=True`` downloads torchvision's ImageNet weights (needs the internet) and
    replaces the last linear layer; the default builds a randomly initialised network and
    never downloads.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    builder, weights = ARCHS[arch]
    if not pretrained:
        return builder(weights=None, num_classes=num_classes)
    model = builder(weights=weights)
    holder, name = classifier(model)
    setattr(holder, name, nn.Linear(getattr(holder, name).in_features, num_classes))
    return model
