"""Robust planner: the planner when estimates are exact, better than it in expectation when not,
and its realisation draws follow the simulator's own estimate-error model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grl_aecnn.evaluation.harness import run_policy
from grl_aecnn.policies.registry import PolicySpec
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.core import VecMEC, error_free, sample_realisations
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"
SMALL = ScenarioConfig(num_devices=8, num_servers=2, max_devices=8, max_servers=2, episode_slots=10,
                       bandwidth_hz=0.2e6, server_flops=20e9)
PLANNER = PolicySpec("planner", "oracle", codecs=["aecnn"], params={"state": "estimated"})
ROBUST = PolicySpec("robust-planner", "robust", codecs=["aecnn"], params={"samples": 24})


@pytest.fixture(scope="module")
def profile():
    return load_profile(PROFILE)


def test_equals_the_planner_without_estimate_error(profile) -> None:
    exact = SMALL.model_copy(update={"channel_est_error_db": 0.0, "capacity_est_noise": 0.0,
                                     "capacity_lag_slots": 0})
    assert error_free(exact) and not error_free(SMALL)
    runs = [run_policy(spec, exact, profile, 2, seed=0) for spec in (PLANNER, ROBUST)]
    assert runs[0].episodes == runs[1].episodes
    assert runs[0].point_counts == runs[1].point_counts


def test_not_worse_than_the_planner_on_noisy_slots(profile) -> None:
    noisy = SMALL.model_copy(update={"channel_est_error_db": 4.0, "capacity_std": 0.3, "capacity_est_noise": 0.1,
                                     "capacity_lag_slots": 2})
    planner, robust = (run_policy(spec, noisy, profile, 4, seed=1) for spec in (PLANNER, ROBUST))
    assert np.mean(robust.episodes["reward"]) >= np.mean(planner.episodes["reward"])
    assert robust.extra["robust_moves_per_slot"] > 0  # it did change the planner's decisions


def test_draws_match_the_simulators_error_model() -> None:
    """Gains: the realised/estimate log-ratio has the configured dB spread in both the simulator
    and the draws; capacity: the draws' spread around the seen value matches the lag model."""
    sc = ScenarioConfig(num_devices=20, num_servers=2, channel_est_error_db=3.0, capacity_est_noise=0.05,
                        capacity_lag_slots=2)
    core = VecMEC(sc, batch=1, seed=0)
    core.reset()
    est = core.estimated()
    draws = sample_realisations(sc, est, 4000, np.random.default_rng(0))
    spread = np.std(10 * np.log10(draws.gain / est.gain))
    assert spread == pytest.approx(3.0, rel=0.05)
    beta = draws.capacity / sc.server_flops
    rho = sc.capacity_correlation ** 2
    expected = np.hypot(sc.capacity_est_noise, sc.capacity_std * np.sqrt(1 - rho ** 2))
    assert np.std(beta[:, 0]) == pytest.approx(expected, rel=0.15)  # clipping trims a little
    assert (draws.task == est.task).all() and (draws.deadline == est.deadline).all()
