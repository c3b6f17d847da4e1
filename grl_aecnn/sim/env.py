"""Gymnasium env over the vectorised core: one MEC network, padded Dict observation, masks.

Observation and action layout: docs/architecture.md; feature definitions: docs/system-model.md.
An action outside `action_mask` raises `InvalidActionError` naming the device, the action and
why; it is never remapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from grl_aecnn.profile import CodecProfile, load_profile, parse_profile
from grl_aecnn.sim import channel
from grl_aecnn.sim.core import (SlotOutcome, SlotState, VecMEC, action_count, capacity_drift, local_outcome,
                                option_grid, slot_outcome)
from grl_aecnn.sim.points import PointTable, point_table
from grl_aecnn.sim.settings import ScenarioConfig

DEVICE_FEATURES = ("task", "deadline", "local_latency", "log_compute", "best_snr")
# What a deployed scheduler knows about its own conditions (the same for every device of a
# network), so one policy trained over many scenarios can tell them apart.
CONTEXT_FEATURES = ("deadline_min", "deadline_max", "channel_error", "capacity_uncertainty", "capacity_mean",
                    "task_prob", "devices_per_server", "servers", "penalty")
SERVER_FEATURES = ("capacity_est", "beta_est", "log_bandwidth", "tasks_per_server")
EDGE_FEATURES = ("snr_db", "spectral_efficiency", "distance")
POINT_FEATURES = ("accuracy", "log_size", "device_flops", "server_flops", "analog")
# Per (device, server, point): what that option asks on the estimates, if it were alone.
OPTION_FEATURES = ("bandwidth_share", "compute_share", "feasible", "accuracy_gain")
SHARE_CLIP = 4.0
FEATURE_CLIP = 10.0
SNR_DB_SCALE = 30.0


class InvalidActionError(ValueError):
    """An action the mask forbids (padded device, device without a task, padded server)."""


def observe(sc: ScenarioConfig, pts: PointTable, est: SlotState) -> dict[str, np.ndarray]:
    """Padded, normalised observation for a batch of estimated states (B first)."""
    bsz, n, m = est.gain.shape
    nmax, mmax, v = sc.max_devices, sc.max_servers, pts.num
    task = est.task.astype(np.float32)
    snr_db = 10.0 * np.log10(np.maximum(channel.snr(sc, est.gain), 1e-12))
    local_latency = pts.local_flops / est.device_flops
    device = np.zeros((bsz, nmax, len(DEVICE_FEATURES) + len(CONTEXT_FEATURES)), np.float32)
    device[:, :n, 0] = task
    device[:, :n, 1] = task * est.deadline / sc.slot_s
    device[:, :n, 2] = np.minimum(local_latency / est.deadline, 4.0)
    device[:, :n, 3] = np.log10(est.device_flops * sc.slot_s / pts.local_flops)
    device[:, :n, 4] = snr_db.max(axis=2) / SNR_DB_SCALE
    device[:, :n, len(DEVICE_FEATURES):] = context(sc)
    server = np.zeros((bsz, mmax, len(SERVER_FEATURES)), np.float32)
    server[:, :m, 0] = np.log10(est.capacity * sc.slot_s / pts.local_flops)
    server[:, :m, 1] = est.capacity / sc.server_flops
    server[:, :m, 2] = np.log10(sc.bandwidth_hz) / 7.0
    server[:, :m, 3] = (task.sum(axis=1, keepdims=True) / m) / 10.0
    edge = np.zeros((bsz, nmax, mmax, len(EDGE_FEATURES)), np.float32)
    edge[:, :n, :m, 0] = snr_db / SNR_DB_SCALE
    edge[:, :n, :m, 1] = channel.spectral_efficiency(channel.snr(sc, est.gain)) / 10.0
    edge[:, :n, :m, 2] = est.distance / sc.area_m
    size = np.where(pts.is_analog, 2.0 * pts.channel_uses, pts.bits)
    point = np.stack([pts.accuracy, np.log10(np.maximum(size, 1.0)) / 6.0, pts.device_flops / pts.local_flops,
                      pts.server_flops / pts.local_flops, pts.is_analog.astype(float)], axis=1)
    option = np.zeros((bsz, nmax, mmax, v, len(OPTION_FEATURES)), np.float32)
    b, c, accuracy = option_grid(sc, pts, est)
    _, local_value = local_outcome(sc, pts, est)
    option[:, :n, :m, :, 0] = np.minimum(b, SHARE_CLIP)
    option[:, :n, :m, :, 1] = np.minimum(c, SHARE_CLIP)
    option[:, :n, :m, :, 2] = (b <= 1.0) & (c <= 1.0)
    option[:, :n, :m, :, 3] = np.where(est.task[:, :, None, None], accuracy - local_value[:, :, None, None], 0.0)
    device_mask = np.zeros((bsz, nmax), np.float32)
    device_mask[:, :n] = 1.0
    server_mask = np.zeros((bsz, mmax), np.float32)
    server_mask[:, :m] = 1.0
    return {
        "device": np.clip(device, -FEATURE_CLIP, FEATURE_CLIP),
        "server": np.clip(server, -FEATURE_CLIP, FEATURE_CLIP),
        "edge": np.clip(edge, -FEATURE_CLIP, FEATURE_CLIP),
        "point": np.broadcast_to(point.astype(np.float32), (bsz, v, len(POINT_FEATURES))).copy(),
        "option": np.clip(option, -FEATURE_CLIP, FEATURE_CLIP),
        "device_mask": device_mask,
        "server_mask": server_mask,
        "action_mask": action_mask(sc, pts.num, est.task),
    }


def context(sc: ScenarioConfig) -> np.ndarray:
    """The scenario's `CONTEXT_FEATURES`, scaled to about [0, 1]."""
    return np.array([
        sc.deadline_min_s / sc.slot_s,
        sc.deadline_max_s / sc.slot_s,
        sc.channel_est_error_db / 10.0,
        capacity_uncertainty(sc) / sc.capacity_mean,
        sc.capacity_mean,
        sc.task_prob,
        sc.num_devices / sc.num_servers / 10.0,
        sc.num_servers / 4.0,
        sc.penalty,
    ], dtype=np.float32)


def capacity_uncertainty(sc: ScenarioConfig) -> float:
    """Std of the realised capacity fraction around what the policy sees: the estimate noise plus
    the AR(1) drift over the lag (see `grl_aecnn.sim.core.sample_realisations`)."""
    return float(np.hypot(sc.capacity_est_noise, capacity_drift(sc)))


def action_mask(sc: ScenarioConfig, num_points: int, task: np.ndarray) -> np.ndarray:
    """(B, N_max, 1 + M_max V): local always allowed; offloading only for real devices with a
    task, to real servers."""
    bsz, n = task.shape
    mask = np.zeros((bsz, sc.max_devices, action_count(sc.max_servers, num_points)), np.float32)
    mask[:, :, 0] = 1.0
    mask[:, :n, 1:action_count(sc.num_servers, num_points)] = task[:, :, None]
    return mask


def slot_metrics(sc: ScenarioConfig, out: SlotOutcome, task: np.ndarray) -> dict[str, float]:
    """Per-slot sums and rates (batch summed), the unit the harness aggregates."""
    tasks = float(task.sum())
    on_time = float(out.on_time.sum())
    acc_sum = float(np.where(out.on_time, out.accuracy, 0.0).sum())
    return {
        "reward": float(out.reward.sum()),
        "tasks": tasks,
        "on_time": on_time,
        "accuracy_sum": acc_sum,
        "offloaded": float(out.offloaded.sum()),
        "avg_accuracy": acc_sum / tasks if tasks else 0.0,
        "success_rate": on_time / tasks if tasks else 0.0,
        "throughput": on_time / sc.slot_s,
    }


EPISODE_METRICS = ("accuracy", "success_rate", "throughput", "reward")


def episode_metrics(infos: list[Mapping[str, float]], slot_s: float) -> dict[str, float]:
    """An episode's figures from its per-slot infos (`slot_metrics`): average inference accuracy
    (failed tasks count 0), service success rate, throughput (on-time tasks/s), reward per slot."""
    tasks = sum(info["tasks"] for info in infos)
    on_time = sum(info["on_time"] for info in infos)
    slots = max(len(infos), 1)
    return {
        "accuracy": sum(info["accuracy_sum"] for info in infos) / tasks if tasks else 0.0,
        "success_rate": on_time / tasks if tasks else 0.0,
        "throughput": on_time / (slots * slot_s),
        "reward": sum(info["reward"] for info in infos) / slots,
    }


class MECEnv(gym.Env):
    """One MEC network per episode of `scenario.episode_slots` slots (then truncated).

    `MECEnv(scenario, profile, codecs=None, seed=None)`, or `MECEnv(env_config)` with a plain
    dict {"scenario": dict, "profile_path": str (or "profile": dict), "codecs": list | None,
    "seed": int | None} - the picklable form RLlib env runners build from.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: ScenarioConfig | Mapping[str, Any] | None = None,
                 profile: CodecProfile | None = None, codecs: list[str] | None = None,
                 seed: int | None = None) -> None:
        if profile is None:
            if not isinstance(scenario, Mapping):
                raise TypeError("MECEnv(scenario, profile, ...) needs a profile, or pass one env_config dict")
            scenario, profile, codecs, seed = _from_config(scenario)
        if not isinstance(scenario, ScenarioConfig):
            raise TypeError(f"scenario must be a ScenarioConfig, got {type(scenario).__name__}")
        self.scenario = scenario
        self.profile = profile
        self.codecs = list(codecs if codecs is not None else scenario.codecs)
        self.points = point_table(profile, self.codecs)
        self.core = VecMEC(scenario, batch=1, seed=seed)
        self._started = False
        sc, v = scenario, self.points.num
        box = lambda *shape: gym.spaces.Box(-FEATURE_CLIP, FEATURE_CLIP, shape, np.float32)  # noqa: E731
        unit = lambda *shape: gym.spaces.Box(0.0, 1.0, shape, np.float32)  # noqa: E731
        self.observation_space = gym.spaces.Dict({
            "device": box(sc.max_devices, len(DEVICE_FEATURES) + len(CONTEXT_FEATURES)),
            "server": box(sc.max_servers, len(SERVER_FEATURES)),
            "edge": box(sc.max_devices, sc.max_servers, len(EDGE_FEATURES)),
            "point": box(v, len(POINT_FEATURES)),
            "option": box(sc.max_devices, sc.max_servers, v, len(OPTION_FEATURES)),
            "device_mask": unit(sc.max_devices),
            "server_mask": unit(sc.max_servers),
            "action_mask": unit(sc.max_devices, 1 + sc.max_servers * v),
        })
        self.action_space = gym.spaces.MultiDiscrete([action_count(sc.max_servers, v)] * sc.max_devices)

    @classmethod
    def from_env_config(cls, env_config: Mapping[str, Any]) -> "MECEnv":
        return cls(*_from_config(env_config))

    @staticmethod
    def env_config(scenario: ScenarioConfig, profile_path: str | Path, codecs: list[str] | None = None,
                   seed: int | None = None) -> dict[str, Any]:
        """The plain-data (picklable) form of this env's arguments."""
        return {"scenario": scenario.model_dump(mode="json"), "profile_path": str(profile_path),
                "codecs": list(codecs) if codecs is not None else None, "seed": seed}

    # -- Gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.seed(seed)
        self.core.reset()
        self._started = True
        return self._obs(), {}

    def step(self, action):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        act = self.check_action(action)
        task = self.core.task.copy()
        out = self.core.step(self.points, act[None, : self.scenario.num_devices])
        self.last_outcome = out
        info = slot_metrics(self.scenario, out, task)
        truncated = self.core.slot >= self.scenario.episode_slots
        if truncated:
            self._started = False
        return self._obs(), info["reward"], False, truncated, info

    # -- what policies may read ------------------------------------------------------------
    def estimated_state(self) -> SlotState:
        """The current slot as the policy knows it (same content as the observation)."""
        return self.core.estimated()

    def realised_state(self) -> SlotState:
        """Privileged: the realised channel and capacity of the current slot (oracle only)."""
        return self.core.realised()

    def evaluate(self, state: SlotState, actions: np.ndarray) -> np.ndarray:
        """Slot reward of each candidate decision (K, N_max) on `state` (B = 1): the model a
        policy uses to score candidates; returns (K,)."""
        acts = np.asarray(actions, dtype=np.int64)[:, : self.scenario.num_devices]
        return slot_outcome(self.scenario, self.points, state.tile(acts.shape[0]), acts).reward.sum(axis=1)

    def check_action(self, action) -> np.ndarray:
        """The action as int64 (N_max,), or InvalidActionError saying which device breaks the mask."""
        act = np.asarray(action)
        sc = self.scenario
        if act.shape != (sc.max_devices,) or not np.issubdtype(act.dtype, np.integer):
            raise InvalidActionError(f"action must be an integer array of shape ({sc.max_devices},), "
                                     f"got {act.dtype} {act.shape}")
        act = act.astype(np.int64)
        width = action_count(sc.max_servers, self.points.num)
        if act.min() < 0 or act.max() >= width:
            raise InvalidActionError(f"action values must be in [0, {width}), got {act.tolist()}")
        mask = action_mask(sc, self.points.num, self.core.task)[0]
        bad = np.flatnonzero(mask[np.arange(sc.max_devices), act] == 0)
        if bad.size:
            n, a = int(bad[0]), int(act[bad[0]])
            if n >= sc.num_devices:
                why = f"device {n} is padding (num_devices={sc.num_devices}); only 0 (local) is allowed"
            elif not self.core.task[0, n]:
                why = f"device {n} has no task this slot; only 0 (local) is allowed"
            else:
                why = f"server {(a - 1) // self.points.num} does not exist (num_servers={sc.num_servers})"
            raise InvalidActionError(f"action {a} for device {n} is masked: {why}")
        return act

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in observe(self.scenario, self.points, self.core.estimated()).items()}


def _from_config(cfg: Mapping[str, Any]) -> tuple[ScenarioConfig, CodecProfile, list[str] | None, int | None]:
    """Parse the dict form; an RLlib EnvContext also offsets the seed per runner and sub-env."""
    scenario = cfg.get("scenario", {})
    scenario = scenario if isinstance(scenario, ScenarioConfig) else ScenarioConfig.model_validate(scenario)
    if cfg.get("profile") is not None:
        profile = cfg["profile"]
        profile = profile if isinstance(profile, CodecProfile) else parse_profile(profile)
    elif cfg.get("profile_path"):
        profile = load_profile(cfg["profile_path"])
    else:
        raise ValueError("env_config needs 'profile_path' (or 'profile')")
    seed = cfg.get("seed")
    if seed is not None:
        seed = int(seed) + 1000 * int(getattr(cfg, "worker_index", 0)) + int(getattr(cfg, "vector_index", 0))
    return scenario, profile, cfg.get("codecs"), seed
