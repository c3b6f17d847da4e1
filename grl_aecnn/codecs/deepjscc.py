"""DeepJSCC on the split tensor: the encoder's outputs are complex channel symbols sent as
analog values (no bits), normalised to unit average power, through AWGN at the training SNR.

There is no bitstream: its cost is channel uses (complex symbols per sample), and its
accuracy depends on the realised SNR, so the profile records a table of accuracy vs SNR.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from grl_aecnn.backbone.split import count_flops
from grl_aecnn.codecs.base import Spec, Variant
from grl_aecnn.codecs.bottlenetpp import conv_decoder, conv_encoder

if TYPE_CHECKING:
    from grl_aecnn.codecs.settings import CodecsConfig


def power_normalize(x: torch.Tensor) -> torch.Tensor:
    """Scale each sample so its complex symbols (pairs of reals) have average power 1."""
    flat = x.flatten(1)
    n_complex = flat.shape[1] / 2
    return (flat * torch.rsqrt(flat.pow(2).sum(1, keepdim=True) / n_complex + 1e-12)).view_as(x)


def awgn(x: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Complex AWGN at the given SNR for unit-power symbols: variance 1/(2 snr) per real part."""
    std = math.sqrt(0.5 * 10 ** (-snr_db / 10))
    return x + std * torch.randn(x.shape, generator=generator, device=x.device)


class DeepJSCCCodec(nn.Module):
    kind = "deepjscc"
    analog = True
    needs_importance = False

    def __init__(self, shape: tuple[int, int, int], channels: int, stride: int = 2, width: int = 64,
                 train_snr_db: float = 10.0):
        super().__init__()
        c, h, w = shape
        self.shape, self.stride, self.train_snr_db = tuple(shape), stride, train_snr_db
        self.code_shape = (2 * channels, -(-h // stride), -(-w // stride))
        self.encoder = conv_encoder(c, 2 * channels, width, stride)
        self.decoder = conv_decoder(2 * channels, c, width, stride)

    @classmethod
    def specs(cls, cfg: "CodecsConfig", importance: np.ndarray | None, channels_total: int) -> list[Spec]:
        p = cfg.deepjscc
        return [{"codec": cls.kind, "id": f"deepjscc-c{c}", "channels": c, "stride": p.stride, "width": p.width,
                 "train_snr_db": p.train_snr_db} for c in p.channels]

    @classmethod
    def from_spec(cls, spec: Spec, shape: tuple[int, int, int]) -> "DeepJSCCCodec":
        return cls(shape, spec["channels"], spec["stride"], spec["width"], spec["train_snr_db"])

    def prepare(self, z: torch.Tensor) -> None:
        """Nothing to fit before training."""

    def finish(self, z: torch.Tensor) -> None:
        """Nothing to fit after training (no entropy model: nothing is coded to bits)."""

    def variants(self, spec: Spec) -> list[Variant]:
        return [Variant(spec["id"], {}, {"kept_channels": spec["channels"], "channel_uses": float(self.channel_uses)})]

    def flops(self) -> tuple[float, float]:
        z = torch.zeros(1, *self.shape)
        with torch.no_grad():
            code = self.encoder(z)
        return count_flops(self.encoder, z), count_flops(self.decoder, code)

    def device_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """The power-normalised channel symbols (float32) sent as analog values."""
        return power_normalize(self.encoder(z))

    def server_input(self, symbols: torch.Tensor) -> torch.Tensor:
        return symbols

    @property
    def channel_uses(self) -> int:
        """Complex channel symbols per sample."""
        c2, h, w = self.code_shape
        return c2 // 2 * h * w

    def transmit(self, z: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
        return awgn(power_normalize(self.encoder(z)), snr_db, generator)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(y)[..., : self.shape[1], : self.shape[2]]

    def forward(self, z: torch.Tensor, snr_db: float | None = None) -> torch.Tensor:
        return self.restore(self.transmit(z, self.train_snr_db if snr_db is None else snr_db))
