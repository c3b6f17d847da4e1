"""The one interface every codec implements (as CompressAI's ``CompressionModel`` is for learned
codecs), so the trainer, the sweep, the measurement, the weights file, the MLflow model and the
export call codecs without knowing which one they hold.

A codec is a ``torch.nn.Module``; everything needed to code a stream lives in its
``state_dict`` (weights, quantiser scales, the entropy model's tables as buffers), so a saved
codec restores without refitting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from grl_aecnn.codecs.settings import CodecsConfig

Spec = dict[str, Any]  # a trained model's settings: plain JSON, also the Tune trial's config


@dataclass(frozen=True)
class Variant:
    """One profile point measured from a trained model: its id, the keyword arguments of
    ``encode`` that make it, and its fields in the profile (kept_channels, bits, ...)."""

    id: str
    encode: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Codec(Protocol):
    """What the trainer, sweep, store, MLflow model and export call on every codec; a digital
    codec is also a `DigitalCodec`, an analog one an `AnalogCodec` (see `analog`)."""

    kind: ClassVar[str]  # the name in configs, specs and profiles
    analog: ClassVar[bool]  # True: sends channel symbols through `transmit`, no bitstream
    needs_importance: ClassVar[bool]  # its specs need the split's channel ranking (trained once per split)
    shape: tuple[int, int, int]  # the split tensor [C, H, W] it codes

    @classmethod
    def specs(cls, cfg: "CodecsConfig", importance: np.ndarray | None, channels_total: int) -> list[Spec]:
        """One spec per model to train, from the config (AECNN needs the channel importance)."""

    @classmethod
    def from_spec(cls, spec: Spec, shape: tuple[int, int, int]) -> "Codec":
        """A fresh, untrained codec."""

    def prepare(self, z: torch.Tensor) -> None:
        """Before training, on the training split tensors [N, C, H, W] (e.g. quantiser ranges)."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Training path: split tensors -> recovered split tensors, differentiable."""

    def finish(self, z: torch.Tensor) -> None:
        """After training, on the training split tensors (e.g. fit the entropy model)."""

    def variants(self, spec: Spec) -> list[Variant]:
        """The profile points this trained model gives."""

    def restore(self, received: torch.Tensor) -> torch.Tensor:
        """Server side: decoded / received batch -> recovered split tensors [N, C, H, W]."""

    def flops(self) -> tuple[float, float]:
        """(device-side encoder, server-side decoder) FLOPs of one sample."""

    def device_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """Traceable device side: split tensors -> the symbols it codes or sends (export)."""

    def server_input(self, symbols: torch.Tensor) -> torch.Tensor:
        """Traceable server side: symbols -> what `restore` takes (export)."""

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> Any: ...


@runtime_checkable
class DigitalCodec(Codec, Protocol):
    """Sends a bitstream."""

    def encode(self, z: np.ndarray, **options: Any) -> bytes:
        """One split tensor [C, H, W] -> bitstream."""

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> what `restore` takes, for one sample; BitstreamError on any fault."""


@runtime_checkable
class AnalogCodec(Codec, Protocol):
    """Sends analog channel symbols: no bits, its cost is channel uses."""

    def transmit(self, z: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Split tensors -> received channel symbols at the SNR."""
