"""AECNN: channel-attention pruning of the split tensor, b-bit quantisation, static entropy
coding, and a lightweight feature-recovery decoder on the server.

The device runs no network beyond the backbone head: it keeps the k channels that the
attention module ranked most important over the training set, quantises them and codes
them. The server decodes the symbols and rebuilds all C channels with a few convolutions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grl_aecnn.backbone.split import count_flops
from grl_aecnn.codecs import quantize as q
from grl_aecnn.codecs.base import Spec, Variant
from grl_aecnn.codecs.bitstream import BitstreamError, Header, pack, unpack
from grl_aecnn.codecs.entropy import SymbolModel, SymbolTables, pack_raw, unpack_raw
from grl_aecnn.codecs.settings import ScaleMode

if TYPE_CHECKING:
    from grl_aecnn.codecs.settings import CodecsConfig

SCALE_MODES = get_args(ScaleMode)
RECOVERY_MODES = ("learned", "zero", "mean")  # "zero"/"mean": ablations without the learned decoder


class ChannelAttention(nn.Module):
    """CBAM channel attention: w = sigmoid(MLP(GAP(z)) + MLP(GMP(z))) with one shared MLP."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(z.mean(dim=(2, 3))) + self.mlp(z.amax(dim=(2, 3))))


def top_channels(importance: np.ndarray, k: int) -> tuple[int, ...]:
    """The k most important channels, in increasing index order (ties: lower index first)."""
    order = np.argsort(-np.asarray(importance), kind="stable")
    return tuple(sorted(int(i) for i in order[:k]))


class FeatureRecovery(nn.Module):
    """k received channels -> C channels: the received ones put back in place, plus the best
    linear 3x3 prediction of all channels (fitted in closed form by ``fit_linear``), plus a
    learned non-linear correction (a few 3x3 convs at the split resolution).

    The closed-form start matters on a short budget: the convs then learn only what a linear
    map of the neighbourhood misses, instead of the whole prediction from a random start."""

    def __init__(self, channels: tuple[int, ...], out_channels: int, width: int = 64):
        super().__init__()
        self.register_buffer("index", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.out_channels = out_channels
        k = len(channels)
        self.linear = nn.Conv2d(k, out_channels, 3, padding=1)
        self.net = nn.Sequential(
            nn.Conv2d(k, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # the convs start as no correction of the linear prediction
        nn.init.zeros_(self.net[-1].bias)

    def _placed(self, x: torch.Tensor) -> torch.Tensor:
        placed = x.new_zeros(x.shape[0], self.out_channels, *x.shape[2:])
        placed[:, self.index] = x
        return placed

    @torch.no_grad()
    def fit_linear(self, x: torch.Tensor, z: torch.Tensor, ridge: float = 1e-3) -> None:
        """Least-squares fit of ``linear`` to z - placed(x) over received tensors x [N, k, H, W]
        and their originals z [N, C, H, W] (normal equations, chunked, float64)."""
        k = x.shape[1]
        gram = torch.zeros(9 * k + 1, 9 * k + 1, dtype=torch.float64)
        cross = torch.zeros(9 * k + 1, self.out_channels, dtype=torch.float64)
        for xs, zs in zip(x.split(1024), z.split(1024)):
            cols = F.unfold(xs, 3, padding=1).transpose(1, 2).reshape(-1, 9 * k).double()
            a = torch.cat([cols, torch.ones(len(cols), 1, dtype=torch.float64)], 1)
            target = (zs - self._placed(xs)).flatten(2).transpose(1, 2).reshape(-1, self.out_channels).double()
            gram += a.T @ a
            cross += a.T @ target
        gram += ridge * torch.trace(gram) / len(gram) * torch.eye(len(gram), dtype=torch.float64)
        sol = torch.linalg.solve(gram, cross)
        self.linear.weight.copy_(sol[:-1].T.reshape(self.out_channels, k, 3, 3).float())
        self.linear.bias.copy_(sol[-1].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self._placed(x) + self.linear(x) + self.net(x))


class FillRecovery(nn.Module):
    """No decoder: the received channels put back in place, the pruned ones filled with a constant
    per channel (zero, or its training mean set by ``calibrate``); the ablation baseline of
    ``FeatureRecovery``."""

    def __init__(self, channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.register_buffer("index", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.register_buffer("fill", torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        placed = self.fill[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:]).clone()
        placed[:, self.index] = x
        return placed


class AECNNCodec(nn.Module):
    """Encoder (select, quantise, entropy-code) and decoder (entropy-decode, dequantise, recover).

    ``scales`` is ``calibrated`` (per-channel clipping scales fitted by ``calibrate`` on
    training data and stored with the codec) or ``per-sample`` (in the header); ``grid`` is
    the entropy model's spatial cells and ``context`` whether it also conditions on each symbol's
    neighbours (see ``entropy.py``). ``recovery`` and
    ``entropy_coded=False`` (fixed-length symbols) exist for the ablations of ``grl_aecnn.ablate``.
    """

    kind = "aecnn"
    analog = False
    needs_importance = True

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], bits: int, width: int = 64,
                 scales: str = "calibrated", clip_percentile: float = 99.5, grid: int = 8,
                 recovery: str = "learned", entropy_coded: bool = True, context: bool = False):
        super().__init__()
        if scales not in SCALE_MODES:
            raise ValueError(f"scales must be one of {SCALE_MODES}, got {scales!r}")
        if recovery not in RECOVERY_MODES:
            raise ValueError(f"recovery must be one of {RECOVERY_MODES}, got {recovery!r}")
        self.shape, self.channels, self.bits = tuple(shape), tuple(channels), bits
        self.scale_mode, self.clip_percentile, self.grid, self.context = scales, clip_percentile, grid, context
        self.recovery_mode, self.entropy_coded = recovery, entropy_coded
        self.recovery = FeatureRecovery(self.channels, shape[0], width) if recovery == "learned" else \
            FillRecovery(self.channels, shape[0])
        self.register_buffer("scales", torch.zeros(len(self.channels)))
        self.entropy = SymbolTables(len(self.channels), shape[1:], q.levels(bits) + 1, grid, context)

    @classmethod
    def specs(cls, cfg: "CodecsConfig", importance: np.ndarray | None, channels_total: int) -> list[Spec]:
        if importance is None:
            raise ValueError("AECNN points need the channel importance")
        p, specs = cfg.aecnn, []
        for k in p.kept_channels:
            if k > channels_total:
                raise ValueError(f"codecs.aecnn.kept_channels: {k} > {channels_total} channels at the split")
            specs += [{"codec": cls.kind, "id": f"aecnn-k{k}-b{b}", "kept_channels": k, "bits": b,
                       "channels": list(top_channels(importance, k)), "width": p.decoder_width,
                       "scales": p.scales, "clip_percentile": p.clip_percentile, "grid": cfg.entropy_grid,
                       "context": cfg.entropy_context}
                      for b in p.bits]
        return specs

    @classmethod
    def from_spec(cls, spec: Spec, shape: tuple[int, int, int]) -> "AECNNCodec":
        return cls(shape, tuple(spec["channels"]), spec["bits"], spec["width"], spec["scales"],
                   spec["clip_percentile"], spec["grid"], spec.get("recovery", "learned"),
                   spec.get("entropy_coded", True), spec.get("context", False))

    @property
    def symbols(self) -> SymbolModel | None:
        return self.entropy.model

    @property
    def calibrated(self) -> bool:
        return self.scale_mode == "calibrated"

    # -- training path (differentiable after the quantiser; the head is frozen) ---------------
    def calibrate(self, z: torch.Tensor) -> None:
        """Fit the clipping scales, then the decoder's linear prediction (or a mean fill), on training
        split tensors [N, C, H, W] (before training)."""
        if self.recovery_mode == "mean":
            self.recovery.fill.copy_(z.mean(dim=(0, 2, 3)))
        if self.calibrated:
            self.scales.copy_(torch.from_numpy(q.calibrate(z[:, list(self.channels)].numpy(), self.clip_percentile)))
        if self.recovery_mode == "learned":
            scales = self.scales if self.calibrated else None
            self.recovery.fit_linear(q.fake_quantize(z[:, list(self.channels)], self.bits, scales), z)

    prepare = calibrate

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        scales = self.scales if self.calibrated else None
        return self.recovery(q.fake_quantize(z[:, list(self.channels)], self.bits, scales))

    def fit_symbols(self, z: torch.Tensor) -> None:
        """Fit the static symbol model on training split tensors [N, C, H, W]."""
        self.entropy.fit(np.stack([self.quantized(x)[1] for x in z.numpy()]))

    finish = fit_symbols

    def variants(self, spec: Spec) -> list[Variant]:
        return [Variant(spec["id"], {}, {"kept_channels": spec["kept_channels"], "bits": spec["bits"],
                                         "entropy_coded": self.entropy_coded})]

    def flops(self) -> tuple[float, float]:
        """The device only selects and quantises (no network); the server runs the recovery decoder."""
        return 0.0, count_flops(self.recovery, torch.zeros(1, len(self.channels), *self.shape[1:]))

    def _step(self) -> torch.Tensor:
        if not self.calibrated:
            raise ValueError(f"AECNN with {self.scale_mode} scales: only calibrated scales are exportable "
                             "(per-sample scales travel in the header)")
        return (self.scales / float(q.levels(self.bits)))[None, :, None, None]

    def device_symbols(self, z: torch.Tensor) -> torch.Tensor:
        kept = z[:, list(self.channels)]
        return torch.clamp(torch.round(kept / self._step()), 0, q.levels(self.bits)).to(torch.int32)

    def server_input(self, symbols: torch.Tensor) -> torch.Tensor:
        return symbols.to(torch.float32) * self._step()

    # -- bitstream path (one sample) ------------------------------------------------------
    def quantized(self, z: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(header scale bytes, symbols) of one [C, H, W] split tensor."""
        kept = np.ascontiguousarray(z[list(self.channels)], dtype=np.float32)
        if self.calibrated:
            if not torch.all(self.scales > 0):
                raise RuntimeError("calibrate() or loaded weights are needed before coding")
            return b"", q.quantize(kept, self.scales.numpy(), self.bits)
        codes = q.scale_codes(kept)
        return codes.tobytes(), q.quantize(kept, q.code_scales(codes), self.bits)

    def dequantized(self, z: np.ndarray) -> np.ndarray:
        """What the server will see for z: the kept channels after quantisation, [k, H, W]."""
        codes, syms = self.quantized(z)
        return q.dequantize(syms, self._scales(codes), self.bits)

    def encode(self, z: np.ndarray, **options: Any) -> bytes:
        if tuple(z.shape) != self.shape:
            raise ValueError(f"expected a split tensor of shape {self.shape}, got {tuple(z.shape)}")
        codes, syms = self.quantized(z)
        payload = self._model().encode(syms) if self.entropy_coded else pack_raw(syms, self.bits)
        return pack(Header(self.kind, self.shape, self.bits, self.entropy_coded, self.channels, codes), payload)

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> dequantised kept channels [k, H, W]; BitstreamError on any fault."""
        header, payload = unpack(data)
        codes = b"" if self.calibrated else header.scale_codes
        if header != Header(self.kind, self.shape, self.bits, self.entropy_coded, self.channels, codes) or \
                len(codes) != (0 if self.calibrated else len(self.channels)):
            raise BitstreamError(f"stream header {header} does not match this codec (shape {self.shape}, "
                                 f"channels {self.channels}, {self.bits} bits, {self.scale_mode} scales)")
        syms = self._model().decode(payload, header.symbols_shape) if self.entropy_coded else \
            unpack_raw(payload, header.symbols_shape, self.bits)
        return q.dequantize(syms, self._scales(codes), self.bits)

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded kept channels [N, k, H, W] -> recovered split tensor [N, C, H, W]."""
        return self.recovery(x)

    def _scales(self, codes: bytes) -> np.ndarray:
        return self.scales.numpy() if self.calibrated else q.code_scales(np.frombuffer(codes, dtype=np.uint8))

    def _model(self) -> SymbolModel:
        if self.entropy.model is None:
            raise RuntimeError("fit_symbols() or a loaded symbol model is needed before coding")
        return self.entropy.model
