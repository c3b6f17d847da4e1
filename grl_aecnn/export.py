"""``grl-aecnn export``: the trained parts as ONNX files that run without this package or Ray.

Per codec point, two files meet at the bitstream's symbols (entropy coding and the header
are lossless, so they sit between the two and are not part of either graph):

- ``<point>/device.onnx``: normalised images ``(B, 3, S, S)`` -> the symbols the device
  entropy-codes: the backbone head, then AECNN's channel selection and calibrated b-bit
  quantisation, or BottleNet++'s encoder and 8-bit rounding (int32); for DeepJSCC the
  power-normalised channel symbols (float32) it sends as analog values;
- ``<point>/server.onnx``: those symbols (as decoded or received) -> class logits: the
  dequantisation, the codec's decoder and the backbone tail (with the weights the codec's
  joint training step gave it).

Per GRL policy, ``policies/<name>.onnx``: the seven observation arrays of one slot (batch
axis of 1 first) -> actions ``(1, N_max)`` int64. The graph is traced on the export scenario,
so it is specialised to its network size (``manifest.json`` records it). A graph ONNX cannot express falls back to
TorchScript (``.pt``, plain ``torch.jit.load``). ``manifest.json`` lists every file with its
inputs and outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from grl_aecnn.models.policy_net import OBS_KEYS, load_actor

if TYPE_CHECKING:
    from grl_aecnn.codecs.base import Codec
    from grl_aecnn.config import ExperimentConfig

OPSET = 17
MANIFEST = "manifest.json"


class DeviceEncoder(nn.Module):
    """Backbone head + the codec's device side, up to the symbols."""

    def __init__(self, head: nn.Module, codec: "Codec") -> None:
        super().__init__()
        self.head, self.codec = head, codec

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.device_symbols(self.head(images))


class ServerDecoder(nn.Module):
    """Symbols -> the codec's decoder -> the backbone tail -> logits."""

    def __init__(self, codec: "Codec", tail: nn.Module) -> None:
        super().__init__()
        self.codec, self.tail = codec, tail

    def forward(self, symbols: torch.Tensor) -> torch.Tensor:
        return self.tail(self.codec.restore(self.codec.server_input(symbols)))


def _write(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], output: str,
           path: Path, dynamic_batch: bool = True) -> dict[str, Any]:
    """``module`` as ONNX at ``path``, TorchScript ``.pt`` if ONNX fails. ``dynamic_batch``: any
    batch size, else the example's (a traced graph built from the batch's masks needs that)."""
    module.eval()
    dynamic = {name: {0: "batch"} for name in [*names, output]} if dynamic_batch else None
    try:
        torch.onnx.export(module, inputs, str(path), input_names=names, output_names=[output], dynamo=False,
                          opset_version=OPSET, dynamic_axes=dynamic)
        fmt = "onnx"
    except Exception as err:  # noqa: BLE001 - any exporter failure falls back to TorchScript
        print(f"[export] {path.name}: ONNX failed ({type(err).__name__}: {err}); writing TorchScript")
        path = path.with_suffix(".pt")
        with torch.no_grad():
            torch.jit.trace(module, inputs).save(str(path))
        fmt = "torchscript"
    return {"file": path.name, "format": fmt, "inputs": {n: list(t.shape) for n, t in zip(names, inputs)},
            "input_dtypes": {n: str(t.dtype).removeprefix("torch.") for n, t in zip(names, inputs)},
            "output": output}


def export_codec(model: nn.Module, split: str, blob: bytes, input_size: int, dest: Path) -> dict[str, Any]:
    """``device`` and ``server`` files of one codec point (weights file ``blob``) into ``dest``."""
    import copy

    from grl_aecnn.backbone.split import split_model
    from grl_aecnn.codecs.store import load_codec

    head, tail = split_model(copy.deepcopy(model).eval(), split)
    codec, spec = load_codec(blob, tail)
    dest.mkdir(parents=True, exist_ok=True)
    device = DeviceEncoder(head, codec).eval()
    images = torch.zeros(2, 3, input_size, input_size)
    with torch.no_grad():
        symbols = device(images)
    return {"codec": spec["codec"], "id": spec["id"],
            "device": _write(device, (images,), ["images"], "symbols", dest / "device.onnx"),
            "server": _write(ServerDecoder(codec, tail).eval(), (symbols,), ["symbols"], "logits",
                             dest / "server.onnx")}


def export_policy(folder: Path, example: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    """One exported policy folder (``policy.json`` + weights) as ``path``; ``example``: one
    observation batch of the scenario it is exported for."""
    actor, meta = load_actor(folder)
    inputs = tuple(torch.as_tensor(np.asarray(example[k], dtype=np.float32)) for k in OBS_KEYS)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"name": meta.get("name", folder.name), "codecs": meta.get("codecs"),
            **_write(actor, inputs, list(OBS_KEYS), "actions", path, dynamic_batch=False)}


def export_run(cfg: "ExperimentConfig", out: Path, codecs: list[str] | None = None,
               policies: list[str] | None = None) -> dict[str, Any]:
    """Export the run folder's codec points and GRL policies (all, or those named) into ``out``."""
    from grl_aecnn.backbone.io import BackboneNotFound, load_trained_backbone
    from grl_aecnn.config import ConfigError
    from grl_aecnn.policies.registry import read_index
    from grl_aecnn.profile import load_profile
    from grl_aecnn.sim.env import MECEnv

    try:
        model, meta = load_trained_backbone(cfg)
    except BackboneNotFound as err:
        raise ConfigError(f"export: {err}") from None
    weights = {w.stem: w for w in sorted((cfg.run_dir / "codecs" / "codecs").glob("*.safetensors"))}
    index = cfg.run_dir / "policies" / "policies.json"
    trained = {s.name: s for s in (read_index(index) if index.exists() else []) if s.kind == "rllib"}
    missing = sorted(set(codecs or []) - set(weights)) + sorted(set(policies or []) - set(trained))
    if missing:
        raise ConfigError(f"export: not in {cfg.run_dir}: {', '.join(missing)} (codec points: {sorted(weights)}, "
                          f"GRL policies: {sorted(trained)})")
    manifest: dict[str, Any] = {"input_size": meta["input_size"], "normalize": meta.get("normalize"),
                                "classes": meta.get("class_names"), "codecs": {}, "policies": {}}
    for point_id in codecs or sorted(weights):
        manifest["codecs"][point_id] = export_codec(model, cfg.codecs.split, weights[point_id].read_bytes(),
                                                    meta["input_size"], out / point_id)
    if policies or trained:
        profile = load_profile(cfg.run_dir / "codecs" / "profile.json")
    for name in policies or sorted(trained):
        spec = trained[name]
        env = MECEnv(cfg.scenario.model_copy(update={"codecs": spec.codecs}), profile, spec.codecs)
        obs, _ = env.reset(seed=cfg.seed)
        entry = export_policy(Path(spec.path), {k: v[None] for k, v in obs.items()},
                              out / "policies" / f"{name}.onnx")
        entry["network"] = {"num_devices": cfg.scenario.num_devices, "num_servers": cfg.scenario.num_servers,
                            "max_devices": cfg.scenario.max_devices, "max_servers": cfg.scenario.max_servers}
        manifest["policies"][name] = entry
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
