"""Ray-free inference of an exported GRL policy folder.

An exported policy folder (``policy.json`` + ``module.safetensors``, written by
``grl_aecnn.rl.policy.export_policy``) is rebuilt here without RLlib or torch-geometric,
whose imports alone take seconds: MLflow's pyfunc loader and the ONNX export both use
this. The networks are the RLModules' own (``rllib_models.nets``, which imports neither),
with the same parameter names, so the safetensors file loads unchanged;
tests/test_mlflow_models.py checks that the actions equal the RLModule's. Layer widths are
read from the stored observation shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from rllib_models.nets import FLOAT_MIN, OBS_KEYS, GCNNet, MLPNet

WEIGHTS, META = "module.safetensors", "policy.json"  # grl_aecnn.rl.policy's export format
FORMAT_VERSION = 1


class PolicyFormatError(ValueError):
    """A folder that is not an exported GRL policy this version can read."""


class PolicyActor(nn.Module):
    """Observation batch -> deterministic actions ``(B, N_max)`` int64: RLlib's greedy action,
    the per-device argmax of the masked logits (``rllib_models.base.mask_logits``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *arrays: Tensor) -> Tensor:
        """``arrays``: the observation's arrays in ``OBS_KEYS`` order (ONNX takes positional inputs)."""
        obs = dict(zip(OBS_KEYS, arrays))
        action_mask, device_mask = obs["action_mask"], obs["device_mask"]
        logits = self.net(obs)
        real = device_mask[..., None] > 0.5
        local_only = torch.arange(logits.shape[-1], device=logits.device) == 0
        allowed = (real & (action_mask > 0.5)) | (~real & local_only)  # no bool Where: onnxruntime lacks it
        return torch.where(allowed, logits, torch.full_like(logits, FLOAT_MIN)).argmax(-1)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Actions for a batch of observations (arrays with a leading batch axis)."""
        with torch.inference_mode():
            tensors = [torch.as_tensor(np.asarray(obs[key], dtype=np.float32)) for key in OBS_KEYS]
            return self(*tensors).numpy().astype(np.int64)


def read_meta(folder: str | Path) -> dict[str, Any]:
    """``policy.json`` of an exported policy folder, checked for what this reader supports."""
    meta_file = Path(folder) / META
    if not meta_file.is_file() or not (Path(folder) / WEIGHTS).is_file():
        raise PolicyFormatError(f"{folder} is not an exported GRL policy ({META} and {WEIGHTS} expected)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT_VERSION or meta.get("module") not in ("gcn", "mlp"):
        raise PolicyFormatError(f"{meta_file}: unsupported policy format {meta.get('format')!r} "
                                f"/ module {meta.get('module')!r}")
    return meta


def load_actor(folder: str | Path) -> tuple[PolicyActor, dict[str, Any]]:
    """The actor of an exported policy folder (eval mode) and its metadata."""
    meta = read_meta(folder)
    shapes, config = meta["observation_shapes"], meta["model_config"]
    net = GCNNet(shapes, config) if meta["module"] == "gcn" else MLPNet(shapes, config, meta["action_nvec"])
    state = {k: v for k, v in load_file(str(Path(folder) / WEIGHTS)).items() if not k.startswith("value_head.")}
    net.load_state_dict(state)  # strict: a missing or renamed layer fails here, not at act()
    return PolicyActor(net).eval(), meta
