"""The ablation: the same interface as the GCN module with a plain MLP over the flattened
observation. It sees the padded tensors as one vector, so unlike the GCN its layer sizes
depend on N_max, M_max and V and it cannot reuse what it learned about one device for another.

``model_config``: ``hidden`` (width, default 128), ``mlp_layers`` (default 2). The network
itself is ``rllib_models.nets.MLPNet`` (shared with Ray-free inference).
"""

from __future__ import annotations

from torch import Tensor, nn

from rllib_models.base import OffloadingRLModule
from rllib_models.nets import MLPNet, Shapes


class MLPOffloadingModule(OffloadingRLModule):
    """Flattened padded observation -> shared trunk -> per-device logits and per-device values."""

    def build(self, shapes: Shapes) -> MLPNet:
        net = MLPNet(shapes, self.model_config, self.action_space.nvec)
        self.value_head = nn.Linear(net.hidden, len(net.nvec))
        return net

    def device_values(self, embeddings: Tensor) -> Tensor:
        return self.value_head(embeddings)
