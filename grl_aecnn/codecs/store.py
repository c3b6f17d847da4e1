"""Operating-point specs, building codecs from them, and the codec weights file.

A spec is a plain dict (it is also the Tune trial's config) holding everything needed to
rebuild the codec, so a weights file can be loaded without the run's config. The file is
safetensors: the codec's weights, the symbol model, and the backbone-tail weights that the
joint step changed; the spec rides in the metadata.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from grl_aecnn.codecs.aecnn import AECNNCodec, top_channels
from grl_aecnn.codecs.bottlenetpp import BottleNetPPCodec
from grl_aecnn.codecs.deepjscc import DeepJSCCCodec
from grl_aecnn.codecs.entropy import SymbolModel
from grl_aecnn.codecs.settings import CodecsConfig

Spec = dict[str, Any]


def point_specs(cfg: CodecsConfig, importance: np.ndarray | None, channels_total: int) -> list[Spec]:
    """One spec per trained model, in the order of `cfg.train`; AECNN needs the importance."""
    specs: list[Spec] = []
    if "aecnn" in cfg.train:
        if importance is None:
            raise ValueError("AECNN points need the channel importance")
        for k in cfg.aecnn.kept_channels:
            if k > channels_total:
                raise ValueError(f"codecs.aecnn.kept_channels: {k} > {channels_total} channels at the split")
            for b in cfg.aecnn.bits:
                specs.append({"codec": "aecnn", "id": f"aecnn-k{k}-b{b}", "kept_channels": k, "bits": b,
                              "channels": list(top_channels(importance, k)), "width": cfg.aecnn.decoder_width,
                              "scales": cfg.aecnn.scales, "clip_percentile": cfg.aecnn.clip_percentile,
                              "grid": cfg.entropy_grid})
    if "bottlenetpp" in cfg.train:
        p = cfg.bottlenetpp
        specs += [{"codec": "bottlenetpp", "id": f"bottlenetpp-c{c}", "channels": c, "stride": p.stride,
                   "width": p.width, "channel": p.channel, "max_noise": p.max_noise, "grid": cfg.entropy_grid}
                  for c in p.channels]
    if "deepjscc" in cfg.train:
        p = cfg.deepjscc
        specs += [{"codec": "deepjscc", "id": f"deepjscc-c{c}", "channels": c, "stride": p.stride,
                   "width": p.width, "train_snr_db": p.train_snr_db} for c in p.channels]
    return specs


def build_codec(spec: Spec, shape: tuple[int, int, int]) -> nn.Module:
    if spec["codec"] == "aecnn":
        return AECNNCodec(shape, tuple(spec["channels"]), spec["bits"], spec["width"], spec["scales"],
                          spec["clip_percentile"], spec["grid"], spec.get("recovery", "learned"),
                          spec.get("entropy_coded", True))
    if spec["codec"] == "bottlenetpp":
        return BottleNetPPCodec(shape, spec["channels"], spec["stride"], spec["width"], spec["channel"],
                                spec["max_noise"], spec["grid"])
    if spec["codec"] == "deepjscc":
        return DeepJSCCCodec(shape, spec["channels"], spec["stride"], spec["width"], spec["train_snr_db"])
    raise ValueError(f"unknown codec {spec['codec']!r}")


def tail_prefixes(tail: nn.Sequential, mode: str) -> list[str]:
    """Names of the tail modules the joint step trains."""
    names = [name for name, _ in tail.named_children()]
    return {"none": [], "first": names[:1], "all": names}[mode]


def save_codec(codec: nn.Module, spec: Spec, shape: tuple[int, int, int], tail: nn.Module,
               trained_tail: list[str]) -> bytes:
    tensors = {f"codec.{k}": v.detach().contiguous() for k, v in codec.state_dict().items()}
    for key, value in tail.state_dict().items():
        if key.split(".")[0] in trained_tail:
            tensors[f"tail.{key}"] = value.detach().contiguous()
    symbols = getattr(codec, "symbols", None)
    if symbols is not None:
        tensors["symbols.probs"] = torch.from_numpy(symbols.probs)
    meta = {"spec": json.dumps(spec), "shape": json.dumps(list(shape))}
    return st_save(tensors, metadata=meta)


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's metadata (8-byte length, then JSON), read straight from bytes."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size])["__metadata__"]


def load_codec(data: bytes, tail: nn.Module) -> tuple[nn.Module, Spec]:
    """Rebuild a codec from its weights file; the stored tail weights are loaded into `tail`."""
    tensors = st_load(data)
    meta = _metadata(data)
    spec = json.loads(meta["spec"])
    codec = build_codec(spec, tuple(json.loads(meta["shape"])))
    codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
    tail_state = {k[5:]: v for k, v in tensors.items() if k.startswith("tail.")}
    if tail_state:
        tail.load_state_dict(tail_state, strict=False)
    if "symbols.probs" in tensors:
        codec.symbols = SymbolModel(tensors["symbols.probs"].numpy())
    codec.eval()
    return codec, spec


def init_codec(codec: nn.Module, spec: Spec, data: bytes) -> bool:
    """Fine-tuning: load the codec weights of a weights file into ``codec`` when it is the same
    codec with the same tensor shapes; False (``codec`` unchanged) otherwise."""
    tensors = st_load(data)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("codec.")}
    own = codec.state_dict()
    if json.loads(_metadata(data)["spec"])["codec"] != spec["codec"] or \
            {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in own.items()}:
        return False
    codec.load_state_dict(state)
    return True
