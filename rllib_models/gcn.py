"""GRL-AECNN's actor-critic: a graph network over the device-server graph, new-API RLModule.

Encoder. Devices and servers are projected to a common width by type-specific MLPs, then
``gcn_layers`` residual GINE convolutions pass messages along
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

``model_config``: ``hidden`` (width, default 32), ``gcn_layers`` (default 2). The network
itself is ``rllib_models.nets.GCNNet`` (shared with Ray-free inference); its GINE layer is
written out in plain torch (tested equal to torch-geometric's ``GINEConv(nn, train_eps=True,
aggr="mean")``), so the model no longer uses torch-geometric.
"""

from __future__ import annotations

from torch import Tensor

from rllib_models.base import OffloadingRLModule
from rllib_models.nets import GCNNet, Shapes, mlp


class GCNOffloadingModule(OffloadingRLModule):
    """Graph actor-critic over the padded MEC observation (see the module docstring)."""

    def build(self, shapes: Shapes) -> GCNNet:
        net = GCNNet(shapes, self.model_config)
        self.value_head = mlp(net.hidden, net.hidden, 1)
        return net

    def device_values(self, embeddings: Tensor) -> Tensor:
        return self.value_head(embeddings).squeeze(-1)
