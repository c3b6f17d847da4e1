"""The GRL policy networks in plain torch: one definition, used for training and inference.

``rllib_models.gcn`` / ``rllib_models.mlp`` wrap them in RLlib modules (adding the value
head); ``grl_aecnn.models.policy_net`` rebuilds them from an exported policy folder for
MLflow's pyfunc loader and the ONNX export, which must not pay for importing Ray. So this
module imports neither Ray nor torch-geometric. The GINE convolution is written out here
(``nn((1 + eps) x_i + mean_j ReLU(x_j + e_ji))``, tests check it equals torch-geometric's
``GINEConv(nn, train_eps=True, aggr="mean")``): the library's scatter ops do not export to
ONNX. See ``rllib_models.gcn`` for why the network looks the way it does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rllib_models.graph import build_bipartite

# The simulator's observation keys; the MLP flattens the observation in this order.
OBS_KEYS = ("device", "server", "edge", "point", "option", "device_mask", "server_mask", "action_mask")
FLOAT_MIN = -3.4e38  # ray.rllib.utils.torch_utils.FLOAT_MIN: masked logits (finite, so KL stays finite)

Shapes = Mapping[str, Sequence[int]]  # observation key -> shape without the batch axis


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class GINE(nn.Module):
    """torch-geometric's ``GINEConv(nn, train_eps=True, aggr="mean")`` without edge projection
    (same parameter names: ``nn.*``, ``eps``)."""

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


class GCNNet(nn.Module):
    """Padded observation -> logits ``(B, N, 1 + M*V)`` and device embeddings ``(B, N, H)``.

    ``model_config``: ``hidden`` (width, default 32), ``gcn_layers`` (default 2)."""

    def __init__(self, shapes: Shapes, model_config: Mapping[str, Any]) -> None:
        super().__init__()
        h = self.hidden = int(model_config.get("hidden", 32))
        self.device_encoder = nn.Sequential(nn.Linear(shapes["device"][-1], h), nn.ReLU())
        self.server_encoder = nn.Sequential(nn.Linear(shapes["server"][-1], h), nn.ReLU())
        self.edge_encoder = nn.Sequential(nn.Linear(shapes["edge"][-1], h), nn.ReLU())
        self.point_encoder = nn.Sequential(nn.Linear(shapes["point"][-1], h), nn.ReLU())
        self.convs = nn.ModuleList(GINE(h) for _ in range(int(model_config.get("gcn_layers", 2))))
        self.local_head = mlp(h, h, 1)
        self.pair_layer = nn.Linear(3 * h, h)  # [h_n, h_m, e_nm] part of the offload head's first layer
        self.point_layer = nn.Linear(h, h, bias=False)  # p_v part
        self.option_layer = nn.Linear(shapes["option"][-1], h, bias=False)  # o_nmv part
        self.offload_out = nn.Linear(h, 1)

    def encode(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Unmasked logits and the padded device embeddings (the value head's input, 0 on padding)."""
        graph = build_bipartite(obs["device_mask"], obs["server_mask"])
        dmask, pair = graph.device_mask, graph.pairs
        (batch, n_max), m_max, v = dmask.shape, graph.server_mask.shape[1], obs["point"].shape[1]

        x = torch.cat([self.device_encoder(obs["device"]).flatten(0, 1), self.server_encoder(obs["server"]).flatten(0, 1)])
        edge = self.edge_encoder(obs["edge"][pair])
        edge_attr = torch.cat([edge, edge])  # both directions carry the link's features
        for conv in self.convs:
            x = x + conv(x, graph.edge_index, edge_attr)
        device_rows = x[: batch * n_max].view(batch, n_max, -1) * dmask[..., None]  # (B, N, H)
        server_rows = x[batch * n_max:].view(batch, m_max, -1)  # (B, M, H); padding is never read

        pair_hidden = self.pair_layer(torch.cat([device_rows[pair[:2]], server_rows[pair[0], pair[2]], edge], -1))
        point_hidden = self.point_layer(self.point_encoder(obs["point"]))  # (B, V, H)
        option_hidden = self.option_layer(obs["option"][pair])  # (P, V, H)
        offload = self.offload_out(
            torch.relu(pair_hidden[:, None, :] + point_hidden[graph.pair_batch] + option_hidden))
        offload_grid = x.new_full((batch, n_max, m_max, v), FLOAT_MIN)
        offload_grid[pair] = offload.squeeze(-1)
        local = torch.where(dmask[..., None], self.local_head(device_rows), 0.0)
        return torch.cat([local, offload_grid.flatten(2)], -1), device_rows

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        return self.encode(obs)[0]


class MLPNet(nn.Module):
    """The ablation: flattened padded observation -> trunk -> per-device logits; the trunk's
    output is the embedding the value head reads.

    ``model_config``: ``hidden`` (width, default 128), ``mlp_layers`` (default 2)."""

    def __init__(self, shapes: Shapes, model_config: Mapping[str, Any], nvec: Sequence[int]) -> None:
        super().__init__()
        h = self.hidden = int(model_config.get("hidden", 128))
        inputs = sum(int(np.prod(shapes[key])) for key in OBS_KEYS)
        trunk: list[nn.Module] = []
        for i in range(int(model_config.get("mlp_layers", 2))):
            trunk += [nn.Linear(inputs if i == 0 else h, h), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.nvec = tuple(int(n) for n in nvec)
        self.pi_head = nn.Linear(h, sum(self.nvec))

    def encode(self, obs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Unmasked logits ``(B, N, K)`` and the trunk output ``(B, H)``."""
        hidden = self.trunk(torch.cat([obs[key].flatten(1) for key in OBS_KEYS], -1))
        return self.pi_head(hidden).view(-1, len(self.nvec), self.nvec[0]), hidden

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        return self.encode(obs)[0]


def adopt_layers(owner: nn.Module, net: nn.Module) -> None:
    """Register ``net``'s layers on ``owner`` under their own names and keep ``net`` itself
    unregistered as ``owner.net``: the owner's state-dict keys are then the net's
    (``convs.0.eps``, not ``net.convs.0.eps``), so one weights file loads into either."""
    if net._parameters or net._buffers:
        raise ValueError(f"{type(net).__name__} holds parameters outside its layers")
    for name, layer in net.named_children():
        owner.add_module(name, layer)
    object.__setattr__(owner, "net", net)
