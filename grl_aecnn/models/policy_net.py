"""The GRL policy networks in plain torch, for inference where Ray is not installed.

An exported policy folder (``policy.json`` + ``module.safetensors``, written by
``grl_aecnn.rl.policy.export_policy``) is rebuilt here without RLlib or torch-geometric,
whose imports alone take seconds: MLflow's pyfunc loader and the ONNX export both use
this. The layers and parameter names are those of ``rllib_models.gcn`` / ``rllib_models.mlp``
(the GINE convolution is written out: ``nn((1 + eps) x_i + mean_j ReLU(x_j + e_ji))``), so
the safetensors file loads unchanged; tests/test_mlflow_models.py checks that the actions
equal the RLModule's. Layer widths are read from the stored observation shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from rllib_models.graph import build_bipartite, to_padded

WEIGHTS, META = "module.safetensors", "policy.json"  # grl_aecnn.rl.policy's export format
FORMAT_VERSION = 1
# rllib_models.base.OBS_KEYS: the MLP flattens the observation in this order
OBS_KEYS = ("device", "server", "edge", "point", "option", "device_mask", "server_mask", "action_mask")
FLOAT_MIN = -3.4e38  # ray.rllib.utils.torch_utils.FLOAT_MIN: masked logits


class PolicyFormatError(ValueError):
    """A folder that is not an exported GRL policy this version can read."""


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class _GINE(nn.Module):
    """torch-geometric's ``GINEConv(nn, train_eps=True, aggr="mean")`` without edge projection."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.nn = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.eps = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        src, dst = edge_index[0], edge_index[1]
        messages = torch.relu(x[src] + edge_attr)
        # scatter_add, not index_add_: the ONNX exporter drops index_add_'s accumulation
        total = x.new_zeros(x.shape).scatter_add(0, dst[:, None].expand_as(messages), messages)
        count = x.new_zeros(x.shape[0]).scatter_add(0, dst, torch.ones_like(dst, dtype=x.dtype))
        return self.nn(total / count.clamp(min=1)[:, None] + (1 + self.eps) * x)


class GCNPolicyNet(nn.Module):
    """``rllib_models.gcn.GCNOffloadingModule.encode`` without the value head."""

    def __init__(self, shapes: dict[str, list[int]], model_config: dict[str, Any]) -> None:
        super().__init__()
        h = int(model_config.get("hidden", 32))
        self.device_encoder = nn.Sequential(nn.Linear(shapes["device"][-1], h), nn.ReLU())
        self.server_encoder = nn.Sequential(nn.Linear(shapes["server"][-1], h), nn.ReLU())
        self.edge_encoder = nn.Sequential(nn.Linear(shapes["edge"][-1], h), nn.ReLU())
        self.point_encoder = nn.Sequential(nn.Linear(shapes["point"][-1], h), nn.ReLU())
        self.convs = nn.ModuleList(_GINE(h) for _ in range(int(model_config.get("gcn_layers", 2))))
        self.local_head = _mlp(h, h, 1)
        self.pair_layer = nn.Linear(3 * h, h)
        self.point_layer = nn.Linear(h, h, bias=False)
        self.option_layer = nn.Linear(shapes["option"][-1], h, bias=False)
        self.offload_out = nn.Linear(h, 1)

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        graph = build_bipartite(obs["device_mask"], obs["server_mask"])
        dmask, smask = graph.device_mask, graph.server_mask
        pair = (graph.pair_batch, graph.pair_device, graph.pair_server)
        x = torch.cat([self.device_encoder(obs["device"][dmask]), self.server_encoder(obs["server"][smask])])
        edge = self.edge_encoder(obs["edge"][pair])
        edge_attr = torch.cat([edge, edge])
        for conv in self.convs:
            x = x + conv(x, graph.edge_index, edge_attr)
        h_device, h_server = x[: graph.num_devices], x[graph.num_devices:]
        (batch, n_max), m_max, v = dmask.shape, smask.shape[1], obs["point"].shape[1]
        device_rows, server_rows = to_padded(h_device, dmask), to_padded(h_server, smask)
        pair_hidden = self.pair_layer(torch.cat([device_rows[pair[:2]], server_rows[pair[0], pair[2]], edge], -1))
        point_hidden = self.point_layer(self.point_encoder(obs["point"]))
        option_hidden = self.option_layer(obs["option"][pair])
        offload = self.offload_out(
            torch.relu(pair_hidden[:, None, :] + point_hidden[graph.pair_batch] + option_hidden))
        grid = x.new_full((batch, n_max, m_max, v), FLOAT_MIN)
        grid[pair] = offload.squeeze(-1)
        local = x.new_zeros(batch, n_max, 1)
        local[dmask] = self.local_head(h_device)
        return torch.cat([local, grid.flatten(2)], -1)


class MLPPolicyNet(nn.Module):
    """``rllib_models.mlp.MLPOffloadingModule.encode`` without the value head."""

    def __init__(self, shapes: dict[str, list[int]], model_config: dict[str, Any], nvec: list[int]) -> None:
        super().__init__()
        h = int(model_config.get("hidden", 128))
        inputs = sum(int(np.prod(shapes[key])) for key in OBS_KEYS)
        trunk: list[nn.Module] = []
        for i in range(int(model_config.get("mlp_layers", 2))):
            trunk += [nn.Linear(inputs if i == 0 else h, h), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.nvec = tuple(nvec)
        self.pi_head = nn.Linear(h, sum(self.nvec))

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        flat = torch.cat([obs[key].flatten(1) for key in OBS_KEYS], -1)
        return self.pi_head(self.trunk(flat)).view(-1, len(self.nvec), self.nvec[0])


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
    net = GCNPolicyNet(shapes, config) if meta["module"] == "gcn" else MLPPolicyNet(shapes, config,
                                                                                 meta["action_nvec"])
    state = {k: v for k, v in load_file(str(Path(folder) / WEIGHTS)).items() if not k.startswith("value_head.")}
    net.load_state_dict(state)  # strict: a missing or renamed layer fails here, not at act()
    return PolicyActor(net).eval(), meta
