"""Many simulator copies as one Gymnasium vector env, stepped by one vectorised core call.

RLlib's default vectorisation (``SyncVectorEnv``) steps ``num_envs_per_env_runner`` separate
``MECEnv`` objects one after another, paying NumPy's per-call overhead once per copy. The
simulator core is already batched (``VecMEC``), so this adapter runs all copies in a single
``VecMEC(batch=num_envs)``: the same system model, observation (`observe`), masks and per-slot
info (`slot_metrics`) as ``MECEnv``, several times more env steps per second at 8 copies
(bench/bench_policy.py). RLlib builds it through the ``VECTOR_ENTRY_POINT`` mode.

All copies have the same episode length, so they end on the same step and restart together
(Gymnasium's next-step autoreset: the step after the last one resets and ignores actions).

With ``env_config["train_scenarios"]`` (a ``ScenarioDistribution``), every copy draws its own
scenario at every reset: network size, deadlines, bandwidth, capacity dynamics, estimate
quality. Copies then step as one core each (their sizes differ; the padding and masks make
the observations stack), so a batch mixes many scenarios and the policy learns to read the
scenario context in its observation; that costs the batching's speed-up (about the speed of
separate ``MECEnv``s, bench/bench_policy.py), small beside the learner update.

Besides ``MECEnv``'s info, each copy's info carries ``device_reward`` ``(N_max,)`` (0 for
padding) for per-device credit assignment (``grl_aecnn.rl.learner``): with
``env_config["credit"] == "difference"`` each device's marginal contribution to the slot reward
(`grl_aecnn.sim.core.difference_rewards`), otherwise the per-device rewards the scalar reward sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from grl_aecnn.sim.core import SlotOutcome, VecMEC, difference_rewards
from grl_aecnn.sim.env import InvalidActionError, MECEnv, action_mask, observe, slot_metrics
from grl_aecnn.sim.scenarios import ScenarioDistribution, ScenarioSampler
from grl_aecnn.sim.settings import ScenarioConfig

DEVICE_REWARD = "device_reward"


class MECVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` independent MEC networks; observations and actions batch-first."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, env_config: Mapping[str, Any], num_envs: int) -> None:
        single = MECEnv.from_env_config({**env_config, "seed": None})
        self.scenario, self.points = single.scenario, single.points
        self.num_envs = num_envs
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(single.observation_space, num_envs)
        self.action_space = batch_space(single.action_space, num_envs)
        dist = ScenarioDistribution.model_validate(env_config.get("train_scenarios") or {})
        self.sampler = None if dist.empty else ScenarioSampler(self.scenario, dist)
        self.rng = np.random.default_rng(env_config.get("seed"))
        self.difference = env_config.get("credit") == "difference"
        # (first copy, core) pairs: one batched core, or one core per copy when scenarios vary.
        self.cores: list[tuple[int, VecMEC]] = [(0, VecMEC(self.scenario, batch=num_envs, seed=env_config.get("seed")))]
        self._episode_over = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            if self.sampler is None:
                self.cores[0][1].seed(seed)
        if self.sampler is not None:
            self.cores = [(b, VecMEC(self.sampler.draw(self.rng), batch=1, seed=int(self.rng.integers(2**63))))
                          for b in range(self.num_envs)]
        for _, core in self.cores:
            core.reset()
        self._episode_over = False
        return self._obs(), {}

    def step(self, actions: np.ndarray):
        if self._episode_over:
            obs, info = self.reset()
            done = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), done, done, info
        act = self._check(np.asarray(actions))
        rows = []
        for first, core in self.cores:
            copies = slice(first, first + core.batch)
            task, state, taken = core.task.copy(), core.realised(), act[copies, : core.sc.num_devices]
            out = core.step(self.points, taken)
            credit = difference_rewards(core.sc, self.points, state, taken, out.reward) if self.difference else out.reward
            rows += [(core.sc, _copy(out, b), task[b:b + 1], credit[b]) for b in range(core.batch)]
        self._episode_over = self.cores[0][1].slot >= self.scenario.episode_slots
        truncated = np.full(self.num_envs, self._episode_over)
        reward = np.array([out.reward.sum() for _, out, _, _ in rows])
        return self._obs(), reward, np.zeros(self.num_envs, dtype=bool), truncated, self._infos(rows)

    def _check(self, act: np.ndarray) -> np.ndarray:
        """Reject what ``MECEnv.check_action`` rejects: masked actions are never remapped."""
        if act.shape != self.action_space.shape or not np.issubdtype(act.dtype, np.integer):
            raise InvalidActionError(f"actions must be integers of shape {self.action_space.shape}, "
                                     f"got {act.dtype} {act.shape}")
        mask = np.concatenate([action_mask(core.sc, self.points.num, core.task) for _, core in self.cores])
        if act.min() < 0 or act.max() >= mask.shape[-1]:
            raise InvalidActionError(f"action values must be in [0, {mask.shape[-1]})")
        allowed = np.take_along_axis(mask, act[..., None], axis=-1)[..., 0]
        if not allowed.all():
            copy, device = map(int, np.argwhere(allowed == 0)[0])
            raise InvalidActionError(f"copy {copy}: action {int(act[copy, device])} for device {device} is masked")
        return act.astype(np.int64)

    def _obs(self) -> dict[str, np.ndarray]:
        parts = [observe(core.sc, self.points, core.estimated()) for _, core in self.cores]
        return parts[0] if len(parts) == 1 else {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _infos(self, rows: list[tuple[ScenarioConfig, SlotOutcome, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """``MECEnv``'s per-slot info and ``device_reward`` of every copy, in Gymnasium's vector-info layout."""
        metrics = [slot_metrics(sc, out, task) for sc, out, task, _ in rows]
        infos: dict[str, np.ndarray] = {key: np.array([row[key] for row in metrics]) for key in metrics[0]}
        infos[DEVICE_REWARD] = np.zeros((self.num_envs, self.scenario.max_devices))
        for b, (sc, _, _, credit) in enumerate(rows):
            infos[DEVICE_REWARD][b, : sc.num_devices] = credit
        return {**infos, **{f"_{key}": np.ones(self.num_envs, dtype=bool) for key in infos}}


def _copy(out: SlotOutcome, index: int) -> SlotOutcome:
    return SlotOutcome(**{name: value[index:index + 1] for name, value in vars(out).items()})


def make_vector_env(env_config: Mapping[str, Any]) -> MECVectorEnv:
    """RLlib's env creator in ``VECTOR_ENTRY_POINT`` mode: it adds ``num_envs`` to the config."""
    return MECVectorEnv({k: v for k, v in env_config.items() if k != "num_envs"}, int(env_config["num_envs"]))
