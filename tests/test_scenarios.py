"""Scenario distributions: draws validate, seeds reproduce, the vector env mixes scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grl_aecnn.config import ConfigError, load_config
from grl_aecnn.rl.vector_env import DEVICE_REWARD, MECVectorEnv
from grl_aecnn.sim.env import CONTEXT_FEATURES, DEVICE_FEATURES, MECEnv
from grl_aecnn.sim.scenarios import ScenarioDistribution, ScenarioSampler
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"
WIDE = ScenarioDistribution(
    ranges={"num_devices": [2, 12], "num_servers": [1, 3], "deadline_min_s": [0.01, 0.05],
            "deadline_max_s": [0.03, 0.1], "channel_est_error_db": [0.0, 5.0], "capacity_lag_slots": [0, 3]},
    choices={"task_prob": [0.5, 1.0]})


def test_every_draw_validates_stays_in_range_and_reproduces() -> None:
    base = ScenarioConfig(num_devices=6, max_devices=12, max_servers=3)
    draws = [ScenarioSampler(base, WIDE).draw(np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]  # same seed, same scenario
    rng = np.random.default_rng(0)
    sampler = ScenarioSampler(base, WIDE)
    seen = [sampler.draw(rng) for _ in range(300)]
    for sc in seen:
        assert ScenarioConfig.model_validate(sc.model_dump()) == sc
        assert sc.deadline_min_s <= sc.deadline_max_s  # a broken rule is redrawn, never passed on
        assert 2 <= sc.num_devices <= 12 and isinstance(sc.num_devices, int)
        assert (sc.max_devices, sc.max_servers) == (12, 3)  # the padding stays the base's
        assert WIDE.contains(sc, base)
    assert {sc.num_servers for sc in seen} == {1, 2, 3} and {sc.task_prob for sc in seen} == {0.5, 1.0}
    assert not WIDE.contains(base.model_copy(update={"penalty": 3.0}), base)  # penalty is not drawn
    assert not WIDE.contains(base.model_copy(update={"channel_est_error_db": 6.0}), base)


@pytest.mark.parametrize("override, message", [
    ("policy.train_scenarios={ranges: {warp: [0, 1]}}", "not drawable"),
    ("policy.train_scenarios={ranges: {bandwidth_hz: [2.0e6, 1.0e6]}}", "exceeds high"),
    ("policy.train_scenarios={choices: {network: [40x2]}}", "exceeds the padding"),
    ("policy.train_scenarios={choices: {network: [big]}}", "NxM"),
    ("policy.train_scenarios={ranges: {deadline_min_s: [0.2, 0.3]}}", "no valid scenario"),
    ("policy.train_scenarios={ranges: {max_devices: [4, 8]}}", "not drawable"),
])
def test_config_rejects_bad_distributions(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_vector_env_draws_a_scenario_per_copy_and_episode() -> None:
    base = ScenarioConfig(num_devices=6, max_devices=12, max_servers=3, episode_slots=3)
    env_config = MECEnv.env_config(base, PROFILE, ["aecnn"], seed=3)
    env_config["train_scenarios"] = WIDE.model_dump(mode="json")
    env = MECVectorEnv(env_config, num_envs=6)
    obs, _ = env.reset(seed=3)
    first = [core.sc for _, core in env.cores]
    assert len({(sc.num_devices, sc.num_servers, sc.deadline_max_s) for sc in first}) > 1
    # Every copy's observation is padded to the same shape and masks its own network.
    assert obs["device"].shape == (6, 12, len(DEVICE_FEATURES) + len(CONTEXT_FEATURES))
    assert obs["device_mask"].sum(axis=1).tolist() == [sc.num_devices for sc in first]
    assert obs["server_mask"].sum(axis=1).tolist() == [sc.num_servers for sc in first]
    # The context features carry each copy's own conditions.
    error_column = len(DEVICE_FEATURES) + CONTEXT_FEATURES.index("channel_error")
    assert obs["device"][:, 0, error_column] == pytest.approx([sc.channel_est_error_db / 10 for sc in first])
    rng = np.random.default_rng(0)
    for _ in range(base.episode_slots):
        mask = obs["action_mask"] > 0
        act = np.where(mask, rng.random(mask.shape), -1).argmax(-1)
        obs, reward, _, truncated, info = env.step(act)
        assert reward == pytest.approx(info[DEVICE_REWARD].sum(axis=1))
    assert truncated.all()
    env.step(np.zeros((6, 12), dtype=np.int64))  # autoreset: new scenarios for the next episode
    assert [core.sc for _, core in env.cores] != first
    # Seeds reproduce the scenario draws.
    again = MECVectorEnv(env_config, num_envs=6)
    again.reset(seed=3)
    assert [core.sc for _, core in again.cores] == first
