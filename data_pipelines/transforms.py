"""Tensor transforms on uint8 images: batch resizing, normalisation, training augmentation.

Images stay uint8 ``[C, H, W]`` until the last step so small datasets fit in memory and
the raw (pre-normalisation) image is always at hand for the codecs' raw-image reference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics for every dataset: grey images are repeated to 3 channels, and the
# same constants keep `backbone.pretrained` (ImageNet weights) valid.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 batch ``[N, C, H, W]`` to ``[N, C, size, size]`` (bilinear, antialiased), in chunks."""
    if images.shape[-2:] == (size, size):
        return images.contiguous()
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """``[1, H, W]`` -> ``[3, H, W]`` (a view); RGB passes through."""
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32 normalised with MEAN/STD."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (image.float().div_(255.0) - mean) / std


def to_hwc_numpy(image: torch.Tensor) -> np.ndarray:
    """uint8 ``[C, H, W]`` -> ``HxWx3`` uint8 array (the raw image the codecs compress)."""
    return to_rgb(image).permute(1, 2, 0).contiguous().numpy()


def random_crop_flip(image: torch.Tensor) -> torch.Tensor:
    """Pad by 1/8 of the side (zeros) and crop back at a random offset; mirror half the time.

    Draws from torch's global generator, which the training loop seeds and DataLoader
    worker processes re-seed, so augmentation is reproducible and differs per worker.
    """
    size = image.shape[-1]
    pad = max(1, size // 8)
    padded = F.pad(image, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    out = padded[..., dy:dy + size, dx:dx + size]
    if torch.rand(()).item() < 0.5:
        out = out.flip(-1)
    return out
