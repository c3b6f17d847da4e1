"""What the GCN policy and its MLP ablation share: action layout, masking, value function.

The action space is ``MultiDiscrete([1 + M_max*V] * N_max)``. RLlib 2.60's ``TorchRLModule``
has no default distribution for it; its catalog would build ``TorchMultiCategorical`` over
the per-device logits concatenated device after device, ``(B, N_max * (1 + M_max*V))``.
The module emits that layout and uses ``TorchFactoredCategorical``, the same distribution
evaluated in one batched op (see ``distribution.py``). The deterministic action is the
per-device argmax, which is what ``grl_aecnn.rl.policy`` reproduces for inference.

Value. The slot reward is a sum of per-device rewards, and a device without a task earns
exactly 0, so the critic predicts one value per deciding device (``compute_device_values``,
the per-device credit assignment of ``grl_aecnn.rl.learner`` needs it) and the slot value
RLlib's GAE reads is their sum. Env runners build the module without the value head
(``InferenceOnlyAPI``): acting never reads it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import Tensor

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.torch_utils import FLOAT_MIN
from rllib_models.distribution import TorchFactoredCategorical
from rllib_models.nets import OBS_KEYS, Shapes, adopt_layers


def mask_logits(logits: Tensor, action_mask: Tensor, device_mask: Tensor) -> Tensor:
    """Forbidden actions get FLOAT_MIN (probability 0, finite KL); padded devices may only run locally.

    ``logits`` and ``action_mask`` are ``(B, N, K)``; the result is flattened to ``(B, N*K)``,
    the layout ``TorchMultiCategorical`` splits back into N categoricals.
    """
    allowed = action_mask > 0.5
    local_only = torch.arange(logits.shape[-1], device=logits.device) == 0
    allowed = torch.where(device_mask[..., None] > 0.5, allowed, local_only)
    return torch.where(allowed, logits, FLOAT_MIN).flatten(1)


def deciding_devices(obs: dict[str, Tensor]) -> Tensor:
    """``(B, N)`` bool: real devices with a task, the only ones with a choice (the action mask
    allows them to offload); the others may only run locally and earn reward 0."""
    return (obs["device_mask"] > 0.5) & (obs["action_mask"][..., 1:] > 0.5).any(-1)


class OffloadingRLModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Base of the offloading policies; subclasses ``build`` their network (``rllib_models.nets``,
    whose layers this module adopts under their own names) and ``value_head``, and implement
    ``device_values``."""

    def setup(self) -> None:
        space = self.observation_space
        if not isinstance(space, gym.spaces.Dict) or set(space.spaces) != set(OBS_KEYS):
            raise ValueError(f"expected the simulator's Dict observation with keys {OBS_KEYS}, got {space}")
        nvec = set(int(n) for n in self.action_space.nvec)
        if not isinstance(self.action_space, gym.spaces.MultiDiscrete) or len(nvec) != 1:
            raise ValueError(f"expected MultiDiscrete([1 + M_max*V] * N_max), got {self.action_space}")
        self.action_dist_cls = TorchFactoredCategorical.get_partial_dist_cls(num_categories=nvec.pop())
        adopt_layers(self, self.build({key: space[key].shape for key in OBS_KEYS}))

    def build(self, shapes: Shapes) -> torch.nn.Module:
        """Set ``value_head`` and return the policy network, whose ``encode`` gives the unmasked
        logits ``(B, N, 1 + M*V)`` and the embeddings the value head reads."""
        raise NotImplementedError

    def device_values(self, embeddings: Tensor) -> Tensor:
        """Unmasked per-device values ``(B, N)`` from ``encode``'s embeddings."""
        raise NotImplementedError

    def get_non_inference_attributes(self) -> list[str]:
        return ["value_head"]

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Tensor]:
        obs = batch[Columns.OBS]
        logits, _ = self.net.encode(obs)
        return {Columns.ACTION_DIST_INPUTS: mask_logits(logits, obs["action_mask"], obs["device_mask"])}

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Tensor]:
        obs = batch[Columns.OBS]
        logits, embeddings = self.net.encode(obs)
        return {Columns.ACTION_DIST_INPUTS: mask_logits(logits, obs["action_mask"], obs["device_mask"]),
                Columns.EMBEDDINGS: embeddings}

    def compute_device_values(self, batch: dict[str, Any], embeddings: Tensor | None = None) -> Tensor:
        """``(B, N)`` expected reward of each device; exactly 0 where the device has no choice."""
        obs = batch[Columns.OBS]
        if embeddings is None:
            _, embeddings = self.net.encode(obs)
        return torch.where(deciding_devices(obs), self.device_values(embeddings), 0.0)

    def compute_values(self, batch: dict[str, Any], embeddings: Tensor | None = None) -> Tensor:
        return self.compute_device_values(batch, embeddings).sum(-1)
