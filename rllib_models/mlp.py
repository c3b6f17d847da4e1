"""The ablation: the same interface as the GCN module with a plain MLP over the flattened
observation. It sees the padded tensors as one vector, so unlike the GCN its layer sizes
depend on N_max, M_max and V and it cannot reuse what it learned about one device for another.

``model_config``: ``hidden`` (width, default 128), ``mlp_layers`` (default 2).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rllib_models.base import OBS_KEYS, OffloadingRLModule


class MLPOffloadingModule(OffloadingRLModule):
    """Flattened padded observation -> shared trunk -> per-device logits and per-device values."""

    def build(self, *, device_features: int, server_features: int, edge_features: int,
              point_features: int, option_features: int) -> None:
        h = int(self.model_config.get("hidden", 128))
        layers = int(self.model_config.get("mlp_layers", 2))
        inputs = sum(int(np.prod(self.observation_space[key].shape)) for key in OBS_KEYS)
        trunk: list[nn.Module] = []
        for i in range(layers):
            trunk += [nn.Linear(inputs if i == 0 else h, h), nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.nvec = tuple(int(n) for n in self.action_space.nvec)
        self.pi_head = nn.Linear(h, sum(self.nvec))
        self.value_head = nn.Linear(h, len(self.nvec))

    def encode(self, obs: dict[str, Tensor], with_embeddings: bool = True) -> tuple[Tensor, Tensor]:
        flat = torch.cat([obs[key].flatten(1) for key in OBS_KEYS], -1)
        hidden = self.trunk(flat)
        return self.pi_head(hidden).view(-1, len(self.nvec), self.nvec[0]), hidden

    def device_values(self, embeddings: Tensor) -> Tensor:
        return self.value_head(embeddings)
