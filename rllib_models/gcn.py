"""GRL-AECNN's actor-critic: a graph network over the device-server graph, new-API RLModule.

Encoder. Devices and servers are projected to a common width by type-specific MLPs, then
``gcn_layers`` residual GINE convolutions (torch-geometric ``GINEConv``) pass messages along
the bipartite device <-> server edges. GINE instead of plain ``GCNConv``: GCNConv takes only
a scalar edge weight, while the channel estimate of a link is a feature vector (gain, rate,
...); GINE adds the encoded edge feature to every message, ``ReLU(h_j + e_ji)``, so a
server learns which devices reach it well and a device which servers are worth it. Mean
aggregation (GCN-style normalisation rather than GIN's sum) keeps embeddings on one scale
whether a server sees 6 or 30 devices, which is what lets one policy serve any network size.

Heads. ``logit(n, local) = MLP(h_n)``; ``logit(n, m, v) = MLP([h_n, h_m, e_nm, p_v, o_nmv])``
with the first layer split into a per-pair, a per-point and a per-option part and
broadcast-added, so the ``pairs x V`` grid never materialises its concatenated input.
``o_nmv`` are the option's own figures on the estimates (the bandwidth and compute shares it
needs alone, whether it fits, its accuracy gain over local): the ratios of payload to rate and
of FLOPs to capacity that a sum of embeddings cannot form. Value: ``V_n = MLP(h_n)`` per
device (the slot value is their sum over deciding devices, see ``base.py``); after the
message passing ``h_n`` already carries the servers' load and the competing devices. No
layer size depends on N, M or V, and padding is never part of the graph, so padded and
unpadded observations give the same logits and values for the real devices (tested).

``model_config``: ``hidden`` (width, default 32), ``gcn_layers`` (default 2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GINEConv

from ray.rllib.utils.torch_utils import FLOAT_MIN
from rllib_models.base import OffloadingRLModule
from rllib_models.graph import build_bipartite, to_padded


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class GCNOffloadingModule(OffloadingRLModule):
    """Graph actor-critic over the padded MEC observation (see the module docstring)."""

    def build(self, *, device_features: int, server_features: int, edge_features: int,
              point_features: int, option_features: int) -> None:
        h = int(self.model_config.get("hidden", 32))
        layers = int(self.model_config.get("gcn_layers", 2))
        self.device_encoder = nn.Sequential(nn.Linear(device_features, h), nn.ReLU())
        self.server_encoder = nn.Sequential(nn.Linear(server_features, h), nn.ReLU())
        self.edge_encoder = nn.Sequential(nn.Linear(edge_features, h), nn.ReLU())
        self.point_encoder = nn.Sequential(nn.Linear(point_features, h), nn.ReLU())
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(h, h), nn.ReLU()), train_eps=True, aggr="mean")
            for _ in range(layers)
        )
        self.local_head = _mlp(h, h, 1)
        self.pair_layer = nn.Linear(3 * h, h)  # [h_n, h_m, e_nm] part of the offload head's first layer
        self.point_layer = nn.Linear(h, h, bias=False)  # p_v part
        self.option_layer = nn.Linear(option_features, h, bias=False)  # o_nmv part
        self.offload_out = nn.Linear(h, 1)
        self.value_head = _mlp(h, h, 1)

    def encode(self, obs: dict[str, Tensor], with_embeddings: bool = True) -> tuple[Tensor, Tensor | None]:
        graph = build_bipartite(obs["device_mask"], obs["server_mask"])
        dmask, smask = graph.device_mask, graph.server_mask
        pair = (graph.pair_batch, graph.pair_device, graph.pair_server)

        x = torch.cat([self.device_encoder(obs["device"][dmask]), self.server_encoder(obs["server"][smask])])
        edge = self.edge_encoder(obs["edge"][pair])
        edge_attr = torch.cat([edge, edge])  # both directions carry the link's features
        for conv in self.convs:
            x = x + conv(x, graph.edge_index, edge_attr)
        h_device, h_server = x[: graph.num_devices], x[graph.num_devices:]

        (batch, n_max), m_max, v = dmask.shape, smask.shape[1], obs["point"].shape[1]
        device_rows = to_padded(h_device, dmask)  # (B, N, H)
        server_rows = to_padded(h_server, smask)  # (B, M, H)
        pair_hidden = self.pair_layer(torch.cat([device_rows[pair[:2]], server_rows[pair[0], pair[2]], edge], -1))
        point_hidden = self.point_layer(self.point_encoder(obs["point"]))  # (B, V, H)
        option_hidden = self.option_layer(obs["option"][pair])  # (P, V, H)
        offload = self.offload_out(
            torch.relu(pair_hidden[:, None, :] + point_hidden[graph.pair_batch] + option_hidden))
        offload_grid = x.new_full((batch, n_max, m_max, v), FLOAT_MIN)
        offload_grid[pair] = offload.squeeze(-1)
        local = x.new_zeros(batch, n_max, 1)
        local[dmask] = self.local_head(h_device)

        return torch.cat([local, offload_grid.flatten(2)], -1), device_rows if with_embeddings else None

    def device_values(self, embeddings: Tensor) -> Tensor:
        return self.value_head(embeddings).squeeze(-1)
