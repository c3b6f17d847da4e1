"""Operating-point specs, building codecs from them, and the codec weights file.

A spec is a plain dict (it is also the Tune trial's config) holding everything needed to
rebuild the codec, so a weights file can be loaded without the run's config. The file is
safetensors: the codec's ``state_dict`` (weights, quantiser scales, entropy tables), and the
backbone-tail weights that the joint step changed; the spec rides in the metadata.
"""

from __future__ import annotations

import json

import numpy as np
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from grl_aecnn.codecs.base import Codec, Spec
from grl_aecnn.codecs.registry import build_codec, codec_class
from grl_aecnn.codecs.settings import CodecsConfig

LEGACY_SYMBOLS = "symbols.probs"  # files written before the tables became a codec buffer
FITTED = "codec.entropy."  # the entropy tables, fitted after training


def point_specs(cfg: CodecsConfig, importance: np.ndarray | None, channels_total: int) -> list[Spec]:
    """One spec per trained model, in the order of `cfg.train`; AECNN needs the importance."""
    return [spec for name in cfg.train for spec in codec_class(name).specs(cfg, importance, channels_total)]


def tail_prefixes(tail: nn.Sequential, mode: str) -> list[str]:
    """Names of the tail modules the joint step trains."""
    names = [name for name, _ in tail.named_children()]
    return {"none": [], "first": names[:1], "all": names}[mode]


def save_codec(codec: Codec, spec: Spec, shape: tuple[int, int, int], tail: nn.Module,
               trained_tail: list[str]) -> bytes:
    tensors = {f"codec.{k}": v.detach().contiguous() for k, v in codec.state_dict().items()}
    for key, value in tail.state_dict().items():
        if key.split(".")[0] in trained_tail:
            tensors[f"tail.{key}"] = value.detach().contiguous()
    meta = {"spec": json.dumps(spec), "shape": json.dumps(list(shape))}
    return st_save(tensors, metadata=meta)


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's metadata (8-byte length, then JSON), read straight from bytes."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size])["__metadata__"]


def load_codec(data: bytes, tail: nn.Module) -> tuple[Codec, Spec]:
    """Rebuild a codec from its weights file; the stored tail weights are loaded into `tail`."""
    tensors = st_load(data)
    meta = _metadata(data)
    spec = json.loads(meta["spec"])
    codec = build_codec(spec, tuple(json.loads(meta["shape"])))
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("codec.")}
    if LEGACY_SYMBOLS in tensors:
        state["entropy.probs"] = tensors[LEGACY_SYMBOLS]
    codec.load_state_dict(state)
    tail_state = {k[5:]: v for k, v in tensors.items() if k.startswith("tail.")}
    if tail_state:
        tail.load_state_dict(tail_state, strict=False)
    codec.eval()
    return codec, spec


def init_codec(codec: Codec, spec: Spec, data: bytes) -> bool:
    """Fine-tuning: load the codec weights of a weights file into ``codec`` when it is the same
    codec with the same tensor shapes; False (``codec`` unchanged) otherwise. The entropy tables
    are left out: training refits them (``finish``), so a codec of other bit depth may start here."""
    tensors = st_load(data)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("codec.") and not k.startswith(FITTED)}
    own = {k: v for k, v in codec.state_dict().items() if not f"codec.{k}".startswith(FITTED)}
    if json.loads(_metadata(data)["spec"])["codec"] != spec["codec"] or \
            {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in own.items()}:
        return False
    codec.load_state_dict(state, strict=False)
    return True
