"""Per-device credit assignment for PPO (``policy.ppo.credit = "device"``).

The slot reward is the sum of N devices' rewards, so RLlib's PPO scores all N decisions of a
slot with one advantage: a device that chose well in a slot where others chose badly is
pushed away from its choice, and each decision's signal drowns in the other N-1's noise.
With gamma 0 every slot is a contextual bandit and device n's own reward r_n is the return
of its decision, so each device gets its own advantage ``A_n = r_n - V_n(s)`` (the module's
per-device critic), its own log-prob ratio and clipping, and the losses are averaged over
the deciding devices (real devices with a task; the others have a single allowed action
and reward 0, so they carry no signal and must not dilute the means).

r_n still depends on what the other devices chose (they share servers and bandwidth): each
device learns as if the others were part of its environment, the usual independent-learner
approximation; the critic sees the whole slot, so ``V_n`` averages over the others' policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
    PPOConfig,
)
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate, GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.torch_utils import explained_variance
from ray.rllib.utils.typing import EpisodeType, ModuleID

from grl_aecnn.rl.vector_env import DEVICE_REWARD
from rllib_models.base import deciding_devices


class AddDeviceRewardsToTrainBatch(ConnectorV2):
    """Adds each timestep's per-device rewards ``(N_max,)`` to the train batch as ``device_reward``.

    An episode stores a step's info with the observation that step returned, i.e. one index
    after the step (index 0 is the reset info), which is why RLlib's
    ``AddInfosFromEpisodesToTrainBatch`` (infos aligned with observations) does not fit.
    Runs after ``AddOneTsToEpisodesAndTruncate``: the appended bootstrap step repeats the last
    info and is excluded from the loss by ``LOSS_MASK``.
    """

    def __call__(self, *, rl_module: RLModule, batch: dict[str, Any], episodes: list[EpisodeType],
                 explore: bool | None = None, shared_data: dict | None = None, **kwargs) -> Any:
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            infos = episode.get_infos(slice(1, len(episode) + 1))
            rewards = np.stack([info[DEVICE_REWARD] for info in infos]).astype(np.float32)
            self.add_n_batch_items(batch, DEVICE_REWARD, items_to_add=rewards, num_items=len(episode),
                                   single_agent_episode=episode)
        return batch


class DeviceCreditPPOLearner(PPOTorchLearner):
    """PPO whose ratio, advantage, value loss and entropy are per device (see the module docstring).

    The per-device advantage is standardised over the minibatch's deciding devices. The
    entropy and KL terms are per-device means, so ``entropy_coeff`` and ``kl_coeff`` weigh
    them against the surrogate as in the per-slot loss; the logged ``entropy`` and
    ``mean_kl_loss`` keep RLlib's per-slot meaning (sum over devices), so the curves of both
    credit modes compare and the adaptive KL coefficient tracks ``kl_target`` per slot.
    """

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.insert_after(AddOneTsToEpisodesAndTruncate, AddDeviceRewardsToTrainBatch())
            self._learner_connector.remove(GeneralAdvantageEstimation)  # the slot advantage is never read

    def compute_loss_for_module(self, *, module_id: ModuleID, config: PPOConfig, batch: dict[str, Any],
                                fwd_out: dict[str, Tensor]) -> Tensor:
        module = self.module[module_id].unwrapped()
        slots = batch.get(Columns.LOSS_MASK, torch.ones_like(batch[DEVICE_REWARD][:, 0], dtype=torch.bool))
        deciding = deciding_devices(batch[Columns.OBS]) & slots[:, None]
        count = deciding.sum().clamp(min=1)

        def device_mean(x: Tensor) -> Tensor:
            return torch.where(deciding, x, 0.0).sum() / count

        def slot_mean(x: Tensor) -> Tensor:
            return torch.where(deciding, x, 0.0).sum() / slots.sum().clamp(min=1)

        curr = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        actions = batch[Columns.ACTIONS]
        ratio = torch.exp(curr.logp_per_device(actions) - prev.logp_per_device(actions))

        rewards = batch[DEVICE_REWARD]
        values = module.compute_device_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        advantages = (rewards - values).detach()
        centred = advantages - device_mean(advantages)
        advantages = centred / device_mean(centred**2).sqrt().clamp(min=1e-4)
        surrogate = torch.min(advantages * ratio,
                              advantages * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))

        vf_loss = (values - rewards) ** 2
        vf_loss_clipped = torch.clamp(vf_loss, 0, config.vf_clip_param)
        entropy = curr.entropy_per_device()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = device_mean(-surrogate + config.vf_loss_coeff * vf_loss_clipped - entropy_coeff * entropy)

        kl = torch.zeros_like(ratio)
        if config.use_kl_loss:
            kl = prev.kl_per_device(curr)
            total_loss = total_loss + self.curr_kl_coeffs_per_module[module_id] * device_mean(kl)

        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -device_mean(surrogate),
                VF_LOSS_KEY: device_mean(vf_loss_clipped),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: device_mean(vf_loss),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(rewards[deciding], values[deciding]),
                ENTROPY_KEY: slot_mean(entropy),
                LEARNER_RESULTS_KL_KEY: slot_mean(kl),
            },
            key=module_id,
            window=1,
        )
        return total_loss
