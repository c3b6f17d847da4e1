"""Rule baselines and the oracle on the same seeded episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grl_aecnn.evaluation.harness import run_policy
from grl_aecnn.policies.base import Policy
from grl_aecnn.policies.oracle import Knapsack, solve_slot
from grl_aecnn.policies.registry import PolicySpec
from grl_aecnn.policies.rules import RandomPolicy
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.core import option_table
from grl_aecnn.sim.env import MECEnv
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"
SMALL = ScenarioConfig(num_devices=6, num_servers=2, max_devices=8, max_servers=2, episode_slots=15,
                       bandwidth_hz=0.2e6, server_flops=20e9)


@pytest.fixture(scope="module")
def profile():
    return load_profile(PROFILE)


def test_oracle_beats_every_rule_on_the_same_episodes(profile) -> None:
    rules = [PolicySpec("all-local", "rule"), PolicySpec("random", "rule"), PolicySpec("greedy", "rule"),
             PolicySpec("all-edge", "rule", codecs=["raw-image"], params={"rule": "fixed", "point": "raw-image"})]
    rules += [PolicySpec(f"fixed:{p.id}", "rule", params={"rule": "fixed", "point": p.id})
              for p in profile.select(["aecnn"])[::3]]
    all_codecs = ["aecnn", "bottlenetpp", "deepjscc", "raw-image", "float32"]
    oracle = run_policy(PolicySpec("oracle", "oracle", codecs=all_codecs), SMALL, profile, 2, seed=0)
    o = np.mean(oracle.episodes["reward"])
    for spec in rules:
        r = np.mean(run_policy(spec, SMALL, profile, 2, seed=0).episodes["reward"])
        assert o >= r, f"{spec.name}: {r} > oracle {o}"


def test_search_matches_exact_milp_on_small_slots(profile) -> None:
    env = MECEnv(SMALL, profile, codecs=["aecnn", "raw-image"])
    env.reset(seed=3)
    proved = 0
    for _ in range(12):
        table = option_table(SMALL, env.points, env.realised_state())
        a_search, gap = solve_slot(table, "search")
        a_exact, exact_gap = solve_slot(table, "milp")
        state = env.realised_state()
        r_search, r_exact = env.evaluate(state, np.stack([np.pad(a, (0, 2)) for a in (a_search, a_exact)]))
        assert exact_gap == 0.0
        assert r_search <= r_exact + 1e-9
        assert gap > 1e-9 or r_search == pytest.approx(r_exact, abs=1e-9), "a zero gap must prove optimality"
        proved += gap <= 1e-9
        assert r_search >= r_exact - 0.1 * abs(r_exact)
        env.step(np.zeros(SMALL.max_devices, np.int64))
    assert proved > 0  # the optimality proof was exercised


def test_oracle_value_is_realised_by_the_env(profile) -> None:
    """What the solver plans (all planned tasks fit) is what the allocation then delivers."""
    env = MECEnv(SMALL, profile)
    env.reset(seed=5)
    for _ in range(10):
        table = option_table(SMALL, env.points, env.realised_state())
        action, _ = solve_slot(table)
        ks = Knapsack(table)
        planned = table.local_value.sum() + sum(
            table.accuracy[n, (a - 1) // ks.v, (a - 1) % ks.v] - table.local_value[n]
            for n, a in enumerate(action) if a > 0)
        got = env.evaluate(env.realised_state(), np.pad(action, (0, 2))[None])[0]
        assert got == pytest.approx(planned)
        env.step(np.zeros(SMALL.max_devices, np.int64))


def test_rules_respect_the_mask(profile) -> None:
    env = MECEnv(SMALL, profile)
    obs, _ = env.reset(seed=1)
    policy: Policy = RandomPolicy(0)
    for _ in range(10):
        action = policy.act(obs)
        assert action.dtype == np.int64 and action.shape == (SMALL.max_devices,)
        assert (obs["action_mask"][np.arange(action.size), action] > 0).all()
        obs, *_ = env.step(action)


def test_planner_is_the_oracle_when_the_estimates_are_exact(profile) -> None:
    """The planner runs the oracle's solver on the estimates: with exact channel estimates and a
    constant capacity it decides exactly as the oracle; with noisy ones it can only lose."""
    codecs = ["aecnn", "raw-image"]
    planner = PolicySpec("planner", "oracle", codecs=codecs, params={"state": "estimated"})
    oracle = PolicySpec("oracle", "oracle", codecs=codecs)
    exact = SMALL.model_copy(update={"channel_est_error_db": 0.0, "capacity_std": 0.0, "capacity_est_noise": 0.0})
    same = [run_policy(spec, exact, profile, 2, seed=0).episodes["reward"] for spec in (planner, oracle)]
    assert same[0] == same[1]
    noisy = SMALL.model_copy(update={"channel_est_error_db": 4.0, "capacity_std": 0.3})
    p, o = (np.mean(run_policy(spec, noisy, profile, 3, seed=0).episodes["reward"]) for spec in (planner, oracle))
    assert p < o
