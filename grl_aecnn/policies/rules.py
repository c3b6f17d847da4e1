"""Rule baselines: all-local, a fixed operating point (all-edge when that point is the raw
image), random, and greedy on the estimates. No torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from grl_aecnn.policies.base import Observation
from grl_aecnn.sim.core import action_count, encode_action

if TYPE_CHECKING:
    from grl_aecnn.sim.env import MECEnv


def best_server(obs: Observation) -> np.ndarray:
    """Per device, the real server with the highest estimated SNR (edge feature 0)."""
    snr = np.where(obs["server_mask"][None, :] > 0, obs["edge"][:, :, 0], -np.inf)
    return snr.argmax(axis=1)


def has_task(obs: Observation) -> np.ndarray:
    return obs["action_mask"][:, 1:].max(axis=1) > 0


class AllLocal:
    """Every task runs the whole CNN on its device."""

    name = "all-local"

    def act(self, obs: Observation) -> np.ndarray:
        return np.zeros(obs["device_mask"].shape[0], dtype=np.int64)


class FixedPoint:
    """Every task offloads with one operating point to its best-estimated server.

    With the env's codecs = ["raw-image"] this is the all-edge, uncompressed baseline.
    """

    def __init__(self, point: int, name: str) -> None:
        self.point = point
        self.name = name

    def act(self, obs: Observation) -> np.ndarray:
        num_points = obs["point"].shape[0]
        action = encode_action(best_server(obs), self.point, num_points)
        return np.where(has_task(obs), action, 0).astype(np.int64)


class RandomPolicy:
    """A uniformly random allowed action per device (seeded, so episodes repeat)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> np.ndarray:
        mask = obs["action_mask"] > 0
        scores = np.where(mask, self.rng.random(mask.shape), -1.0)
        return scores.argmax(axis=1).astype(np.int64)


class GreedyEstimate:
    """Coordinate ascent on the estimated slot reward, from the cheapest point.

    Every task starts on the smallest-payload point at its best-estimated server (what fits
    most tasks); then devices in order of deadline (tightest first) each take the action that
    maximises the model's slot reward on the *estimates*, the others held fixed. One pass.
    """

    name = "greedy"

    def bind(self, env: "MECEnv") -> None:
        self.env = env

    def act(self, obs: Observation) -> np.ndarray:
        env = self.env
        state = env.estimated_state()
        width = action_count(env.scenario.num_servers, env.points.num)
        action = FixedPoint(0, "cheapest").act(obs)
        order = np.argsort(np.where(state.task[0], state.deadline[0], np.inf), kind="stable")
        for dev in order[: int(state.task[0].sum())]:
            cands = np.repeat(action[None, :], width, axis=0)
            cands[:, dev] = np.arange(width)
            action[dev] = int(np.argmax(env.evaluate(state, cands)))
        return action
