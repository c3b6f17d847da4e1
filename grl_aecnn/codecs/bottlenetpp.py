"""BottleNet++ (Shao & Zhang 2020) on the split tensor: a conv encoder to a few channels,
sigmoid, 8-bit values, a non-trainable channel layer during training, a conv decoder.

As published the 8-bit values are sent as they are; the fairer variant codes them with the
same static entropy coder as AECNN. One trained model serves both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from grl_aecnn.backbone.split import count_flops
from grl_aecnn.codecs.base import Spec, Variant
from grl_aecnn.codecs.bitstream import BitstreamError, Header, pack, unpack
from grl_aecnn.codecs.entropy import SymbolModel, SymbolTables, pack_raw, unpack_raw

if TYPE_CHECKING:
    from grl_aecnn.codecs.settings import CodecsConfig

BITS = 8
LEVELS = (1 << BITS) - 1


def conv_encoder(c_in: int, c_out: int, width: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, c_out, 3, padding=1),
    )


def conv_decoder(c_in: int, c_out: int, width: int, stride: int) -> nn.Sequential:
    up = (nn.ConvTranspose2d(c_in, width, stride * 2, stride=stride, padding=stride // 2, bias=False)
          if stride > 1 else nn.Conv2d(c_in, width, 3, padding=1, bias=False))
    return nn.Sequential(
        up, nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, c_out, 3, padding=1), nn.ReLU(inplace=True),
    )


class ChannelLayer(nn.Module):
    """Non-trainable channel during training: AWGN or erasure with a level drawn per sample;
    the level is appended as an extra input plane so one decoder serves every channel state."""

    def __init__(self, kind: str, max_level: float):
        super().__init__()
        self.kind, self.max_level = kind, max_level

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        level = torch.zeros(y.shape[0], 1, 1, 1, device=y.device)
        if self.training:
            level = torch.rand_like(level) * self.max_level
            if self.kind == "awgn":
                y = y + torch.randn_like(y) * level
            else:
                y = y * (torch.rand_like(y) >= level)
        return torch.cat([y, level.expand(-1, 1, *y.shape[2:])], dim=1)


def variant_id(point_id: str, entropy_coded: bool) -> str:
    """Profile id of a variant: as published, or with the entropy coder (``-ec``)."""
    return f"{point_id}-ec" if entropy_coded else point_id


class BottleNetPPCodec(nn.Module):
    kind = "bottlenetpp"
    analog = False
    needs_importance = False

    def __init__(self, shape: tuple[int, int, int], channels: int, stride: int = 2, width: int = 64,
                 channel: str = "awgn", max_level: float = 0.1, grid: int = 8):
        super().__init__()
        c, h, w = shape
        self.shape, self.stride, self.grid = tuple(shape), stride, grid
        self.code_shape = (channels, -(-h // stride), -(-w // stride))
        self.encoder = conv_encoder(c, channels, width, stride)
        self.channel = ChannelLayer(channel, max_level)
        self.decoder = conv_decoder(channels + 1, c, width, stride)
        self.entropy = SymbolTables(channels, self.code_shape[1:], LEVELS + 1, grid)

    @classmethod
    def specs(cls, cfg: "CodecsConfig", importance: np.ndarray | None, channels_total: int) -> list[Spec]:
        p = cfg.bottlenetpp
        return [{"codec": cls.kind, "id": f"bottlenetpp-c{c}", "channels": c, "stride": p.stride, "width": p.width,
                 "channel": p.channel, "max_noise": p.max_noise, "grid": cfg.entropy_grid,
                 "entropy_coded": p.entropy_coded} for c in p.channels]

    @classmethod
    def from_spec(cls, spec: Spec, shape: tuple[int, int, int]) -> "BottleNetPPCodec":
        return cls(shape, spec["channels"], spec["stride"], spec["width"], spec["channel"], spec["max_noise"],
                   spec["grid"])

    @property
    def symbols(self) -> SymbolModel | None:
        return self.entropy.model

    def prepare(self, z: torch.Tensor) -> None:
        """Nothing to fit before training."""

    def variants(self, spec: Spec) -> list[Variant]:
        return [Variant(variant_id(spec["id"], e), {"entropy_coded": e},
                        {"kept_channels": spec["channels"], "bits": BITS, "entropy_coded": e})
                for e in spec.get("entropy_coded", (False, True))]

    def flops(self) -> tuple[float, float]:
        z = torch.zeros(1, *self.shape)
        with torch.no_grad():
            code = self.channel(self.encoder(z))
        return count_flops(self.encoder, z), count_flops(self.decoder, code)

    def device_symbols(self, z: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.sigmoid(self.encoder(z)) * LEVELS).to(torch.int32)

    def server_input(self, symbols: torch.Tensor) -> torch.Tensor:
        return symbols.to(torch.float32) / float(LEVELS)

    def encode_values(self, z: torch.Tensor) -> torch.Tensor:
        """Values in [0, 1] on the 8-bit grid; straight-through rounding when training."""
        y = torch.sigmoid(self.encoder(z))
        return y + (torch.round(y * LEVELS) / LEVELS - y).detach()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.restore(self.encode_values(z))

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.channel(y))
        return out[..., : self.shape[1], : self.shape[2]]

    @torch.no_grad()
    def code_symbols(self, z: torch.Tensor) -> np.ndarray:
        """8-bit symbols [N, c, h, w] of a batch of split tensors."""
        return self.device_symbols(z).numpy()

    def finish(self, z: torch.Tensor) -> None:
        """Fit the entropy model on the training split tensors' code symbols."""
        self.eval()
        self.entropy.fit(np.concatenate([self.code_symbols(chunk) for chunk in z.split(256)]))

    def encode(self, z: np.ndarray, entropy_coded: bool = True) -> bytes:
        if tuple(z.shape) != self.shape:
            raise ValueError(f"expected a split tensor of shape {self.shape}, got {tuple(z.shape)}")
        syms = self.code_symbols(torch.from_numpy(np.asarray(z, dtype=np.float32))[None])[0]
        if entropy_coded:
            if self.symbols is None:
                raise RuntimeError("finish() or a loaded symbol model is needed for entropy coding")
            payload = self.symbols.encode(syms)
        else:
            payload = pack_raw(syms, BITS)
        return pack(self._header(entropy_coded), payload)

    def _header(self, entropy_coded: bool) -> Header:
        return Header(self.kind, self.code_shape, BITS, entropy_coded, tuple(range(self.code_shape[0])))

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> code values in [0, 1], [c, h, w]; BitstreamError on any fault."""
        header, payload = unpack(data)
        if header != self._header(header.entropy_coded):
            raise BitstreamError(f"stream header {header} does not match this codec (code shape {self.code_shape})")
        if header.entropy_coded:
            if self.symbols is None:
                raise BitstreamError("entropy-coded stream but this codec has no symbol model")
            syms = self.symbols.decode(payload, self.code_shape)
        else:
            syms = unpack_raw(payload, self.code_shape, BITS)
        return syms.astype(np.float32) / np.float32(LEVELS)
