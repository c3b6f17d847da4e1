"""One categorical per device, evaluated as a single batched torch ``Categorical``.

Same input layout and the same distribution as RLlib's ``TorchMultiCategorical`` for
``MultiDiscrete([K] * N)`` (logits concatenated device after device; log-probability,
entropy and KL summed over devices; deterministic action = per-device argmax). RLlib's
class loops over N ``Categorical`` objects in Python, which at N_max = 32 was the largest
cost of sampling and of each PPO minibatch; with equal K the N factors are one
``(..., N, K)`` tensor. The ``*_per_device`` methods keep the device axis for per-device
credit assignment (``grl_aecnn.rl.learner``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from ray.rllib.core.distribution.torch.torch_distribution import TorchDeterministic, TorchDistribution


class TorchFactoredCategorical(TorchDistribution):
    """N independent K-way categoricals from ``(..., N*K)`` logits."""

    def __init__(self, logits: Tensor, num_categories: int) -> None:
        super().__init__(logits=logits.unflatten(-1, (-1, num_categories)))

    def _get_torch_distribution(self, logits: Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=logits)

    def logp_per_device(self, value: Tensor) -> Tensor:
        """``(..., N)`` log-probabilities of each device's action."""
        return self._dist.log_prob(value)

    def entropy_per_device(self) -> Tensor:
        return self._dist.entropy()

    def kl_per_device(self, other: "TorchFactoredCategorical") -> Tensor:
        return torch.distributions.kl.kl_divergence(self._dist, other._dist)

    def logp(self, value: Tensor, **kwargs) -> Tensor:
        return self.logp_per_device(value).sum(-1)

    def entropy(self) -> Tensor:
        return self.entropy_per_device().sum(-1)

    def kl(self, other: "TorchFactoredCategorical") -> Tensor:
        return self.kl_per_device(other).sum(-1)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs) -> int:
        return int(np.sum(space.nvec))

    def to_deterministic(self) -> TorchDeterministic:
        return TorchDeterministic(loc=self._dist.logits.argmax(-1))
