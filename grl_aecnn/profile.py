"""The codec profile: the versioned contract between the codec sweep and the simulator.

The sweep measures every trained codec on real bitstreams and writes one `CodecProfile`
(JSON). The simulator and every policy see the CNN only through it, so this module
imports neither torch nor Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grl_aecnn.input_files import BadFile, read_text

PROFILE_VERSION = 1
MAX_PROFILE_BYTES = 16 * 1024 * 1024

CodecName = Literal["aecnn", "bottlenetpp", "deepjscc", "raw-image", "float32", "local"]
DIGITAL_CODECS = ("aecnn", "bottlenetpp", "raw-image", "float32")
ANALOG_CODECS = ("deepjscc",)
OFFLOAD_CODECS = (*DIGITAL_CODECS, *ANALOG_CODECS)


class ProfileError(ValueError):
    """A profile file is missing, of the wrong version, or has a bad field (named in the message)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BackboneInfo(_Strict):
    arch: str
    input_size: int = Field(gt=0)
    dataset: str
    num_classes: int = Field(gt=1)
    clean_accuracy: float = Field(ge=0, le=1)
    total_flops: float = Field(gt=0, description="FLOPs of one full forward pass (multiply-adds x 2).")
    split: str
    split_shape: tuple[int, int, int]
    input_bytes_mean: float = Field(gt=0, description="Mean PNG size of one input image.")


class SnrPoint(_Strict):
    snr_db: float
    accuracy: float = Field(ge=0, le=1)


class SeedResult(_Strict):
    """One seed's training of a codec point, measured on the test split."""

    seed: int = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)
    payload_bytes: float | None = Field(None, ge=0)


class OperatingPoint(_Strict):
    """One way to run a task: locally, or with one codec setting on an edge server."""

    id: str = Field(min_length=1)
    codec: CodecName
    split: str | None = None
    kept_channels: int | None = Field(None, ge=1)
    bits: int | None = Field(None, ge=1, le=16)
    entropy_coded: bool = False
    payload_bytes: float | None = Field(None, ge=0, description="Mean bitstream length, header included "
                                                                 "(trained codecs: the mean over seeds).")
    channel_uses: float | None = Field(None, gt=0, description="Complex channel symbols (analog codecs).")
    accuracy: float = Field(ge=0, le=1, description="Top-1 on the test split (analog: at the training SNR); "
                                                    "trained codecs: the mean over seeds.")
    accuracy_ci95: float | None = Field(None, ge=0, description="Half-width of the 95 % t-interval over seeds.")
    drop_ci95: float | None = Field(None, ge=0, description="Half-width of the 95 % interval of the top-1 drop "
                                                            "against the clean backbone that the finite test set "
                                                            "leaves (paired over the same images, seeds averaged "
                                                            "per image).")
    seeds: list[SeedResult] | None = Field(None, description="Per-seed results of a trained codec.")
    accuracy_vs_snr: list[SnrPoint] | None = None
    device_flops: float = Field(ge=0, description="Head + encoder FLOPs run on the device.")
    server_flops: float = Field(ge=0, description="Decoder + tail FLOPs run on the edge server.")
    encode_ms: float = Field(0.0, ge=0)
    decode_ms: float = Field(0.0, ge=0)
    compression_ratio: float | None = Field(None, gt=0, description="float32 split tensor bytes / payload.")

    @model_validator(mode="after")
    def _codec_fields(self) -> "OperatingPoint":
        if self.codec in DIGITAL_CODECS and self.payload_bytes is None:
            raise ValueError(f"point {self.id!r}: payload_bytes is required for codec {self.codec!r}")
        if self.codec in ANALOG_CODECS:
            if self.channel_uses is None:
                raise ValueError(f"point {self.id!r}: channel_uses is required for codec {self.codec!r}")
            if not self.accuracy_vs_snr or len(self.accuracy_vs_snr) < 2:
                raise ValueError(f"point {self.id!r}: accuracy_vs_snr needs at least 2 entries")
            snrs = [p.snr_db for p in self.accuracy_vs_snr]
            if snrs != sorted(snrs) or len(set(snrs)) != len(snrs):
                raise ValueError(f"point {self.id!r}: accuracy_vs_snr must be sorted by snr_db, no repeats")
        if self.codec == "local" and self.server_flops != 0:
            raise ValueError(f"point {self.id!r}: a local point runs nothing on the server (server_flops=0)")
        return self

    @property
    def is_analog(self) -> bool:
        return self.codec in ANALOG_CODECS


class CodecProfile(_Strict):
    version: int
    backbone: BackboneInfo
    points: list[OperatingPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "CodecProfile":
        if self.version != PROFILE_VERSION:
            raise ValueError(f"version {self.version} is not supported (expected {PROFILE_VERSION})")
        ids = [p.id for p in self.points]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"points: duplicate ids {dupes}")
        if not any(p.codec == "local" for p in self.points):
            raise ValueError("points: a 'local' point is required")
        return self

    def local_point(self) -> OperatingPoint:
        return next(p for p in self.points if p.codec == "local")

    def select(self, codecs: list[str]) -> list[OperatingPoint]:
        """The offloading points of the given codecs, smallest payload first."""
        unknown = sorted(set(codecs) - {p.codec for p in self.points} - {"local"})
        if unknown:
            have = sorted({p.codec for p in self.points})
            raise ProfileError(f"codecs {unknown} are not in the profile (it has: {', '.join(have)})")
        chosen = [p for p in self.points if p.codec in codecs and p.codec != "local"]
        return sorted(chosen, key=lambda p: (p.payload_bytes or 0.0, p.channel_uses or 0.0, p.id))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2, exclude_none=True))
        return path


def load_profile(path: str | Path) -> CodecProfile:
    """Read and validate a profile; any fault raises ProfileError naming the field."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "profile", MAX_PROFILE_BYTES), parse_constant=_no_constant)
    except BadFile as err:
        raise ProfileError(str(err)) from None
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise ProfileError(f"{path}: JSON nested too deeply") from None
    except ProfileError as err:
        raise ProfileError(f"{path}: {err}") from None
    return parse_profile(data, source=str(path))


def _no_constant(name: str) -> float:
    raise ProfileError(f"{name} is not allowed in a profile (every number must be finite)")


def parse_profile(data: object, source: str = "profile") -> CodecProfile:
    if isinstance(data, dict) and data.get("version") not in (None, PROFILE_VERSION):
        raise ProfileError(f"{source}: version: {data.get('version')!r} is not supported (expected {PROFILE_VERSION})")
    try:
        return CodecProfile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ProfileError(f"{source}: {loc}: {first['msg'].removeprefix('Value error, ')}") from None
