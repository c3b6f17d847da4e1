"""Rule baselines and the oracle on the same seeded episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grl_aecnn.evaluation.harness import run_policy
from grl_aecnn.policies.base import Policy
from grl_aecnn.policies.oracle import CAPACITY, SUBGRADIENT_STEPS, Knapsack, solve_slot
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


# The oracle's search as NumPy states it; `Knapsack.search` is its compiled form.

def _np_usage(ks: Knapsack, pick: np.ndarray) -> np.ndarray:
    return ks.use[pick[pick >= 0]].sum(axis=0)


def _np_value(ks: Knapsack, pick: np.ndarray) -> float:
    return float(ks.gain[pick[pick >= 0]].sum())


def _np_priced_choice(ks: Knapsack, price: np.ndarray) -> tuple[np.ndarray, float]:
    score = ks.gain - (ks.use * price[None]).sum(axis=(1, 2))
    best, best_score = np.full(ks.n, -1), np.zeros(ks.n)
    order = np.argsort(score, kind="stable")
    keep = score[order] > 0
    best[ks.dev[order[keep]]] = order[keep]
    best_score[ks.dev[order[keep]]] = score[order[keep]]
    return best, float(best_score.sum() + CAPACITY * price.sum())


def _np_count_first(ks: Knapsack) -> np.ndarray:
    need = ks.use.max(axis=(1, 2))
    pick, room, smallest = np.full(ks.n, -1), np.full((ks.m, 2), CAPACITY), np.full(ks.n, np.inf)
    np.minimum.at(smallest, ks.dev, need)
    for dev in np.argsort(smallest, kind="stable"):
        opts = np.flatnonzero(ks.dev == dev)
        left = room[None] - ks.use[opts]
        ok = (left >= 0).all(axis=(1, 2))
        if ok.any():
            k = opts[ok][int(np.argmax(left[ok].min(axis=(1, 2))))]
            pick[dev] = k
            room -= ks.use[k]
    return pick


def _np_repair(ks: Knapsack, pick: np.ndarray) -> np.ndarray:
    while True:
        over = _np_usage(ks, pick) > CAPACITY
        if not over.any():
            return pick
        on = np.flatnonzero(pick >= 0)
        load = (ks.use[pick[on]] * over[None]).sum(axis=(1, 2))
        ratio = np.where(load > 0, ks.gain[pick[on]] / np.maximum(load, 1e-12), np.inf)
        pick[on[int(np.argmin(ratio))]] = -1


def _np_apply(ks: Knapsack, pick: np.ndarray, e: int) -> None:
    if e < ks.dev.size:
        pick[ks.dev[e]] = e
    elif e < ks.dev.size + ks.n:
        pick[e - ks.dev.size] = -1


def _np_local_search(ks: Knapsack, pick: np.ndarray) -> np.ndarray:
    ext_dev = np.concatenate([ks.dev, np.arange(ks.n), [-1]])
    noop = ext_dev < 0
    while True:
        on = pick >= 0
        cur = np.where(on, ks.gain[np.maximum(pick, 0)], 0.0)
        contrib = np.where(on[:, None, None], ks.use[np.maximum(pick, 0)], 0.0)
        room = CAPACITY - contrib.sum(axis=0)
        d = np.concatenate([ks.use - contrib[ks.dev], -contrib, np.zeros((1, ks.m, 2))])
        delta = np.concatenate([ks.gain - cur[ks.dev], -cur, [0.0]])
        alone = (d <= room[None]).all(axis=(1, 2))
        single = np.where(alone, delta, -np.inf)
        best = int(np.argmax(single))
        if single[best] > 1e-12:
            _np_apply(ks, pick, best)
            continue
        first = np.flatnonzero(alone | (d.max(axis=(1, 2)) <= 0))
        fits = ((d[first][:, None] + d[None, :]) <= room[None, None]).all(axis=(2, 3))
        distinct = (ext_dev[first][:, None] != ext_dev[None, :]) | noop[first][:, None] | noop[None, :]
        score = np.where(fits & distinct, delta[first][:, None] + delta[None, :], -np.inf)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] <= 1e-12:
            return pick
        _np_apply(ks, pick, int(first[i]))
        _np_apply(ks, pick, int(j))


def _np_search(ks: Knapsack) -> tuple[np.ndarray, float]:
    price, bound, starts, scale = np.zeros((ks.m, 2)), np.inf, [], float(ks.gain.max())
    for step in range(SUBGRADIENT_STEPS):
        choice, lag = _np_priced_choice(ks, price)
        if lag < bound:
            bound = lag
            starts.append(choice)
        excess = _np_usage(ks, choice) - CAPACITY
        if (excess <= 0).all() and np.allclose(price * excess, 0):
            break
        price = np.maximum(price + scale / np.sqrt(step + 1.0) * excess, 0.0)
    best, best_val = np.full(ks.n, -1), 0.0
    for start in (starts[-1], _np_count_first(ks)):
        pick = _np_local_search(ks, _np_repair(ks, start.copy()))
        if _np_value(ks, pick) > best_val:
            best, best_val = pick, _np_value(ks, pick)
    return best, bound


@pytest.mark.parametrize("network", [(6, 2), (14, 2), (30, 4), (20, 5)])
def test_compiled_search_equals_its_numpy_statement(profile, network) -> None:
    """Same picks and the same bound, bit for bit, on congested slots (the search runs) of several
    network sizes, 4 and 5 servers included (NumPy sums 8 or more prices pairwise)."""
    n, m = network
    congested = SMALL.model_copy(update={"num_devices": n, "num_servers": m, "max_devices": n, "max_servers": m,
                                         "bandwidth_hz": 0.1e6, "server_flops": 8e9})
    env = MECEnv(congested, profile, codecs=["aecnn", "bottlenetpp", "raw-image"])
    env.reset(seed=n + m)
    searched = 0
    for _ in range(15):
        ks = Knapsack(option_table(congested, env.points, env.realised_state()))
        if ks.dev.size and (ks.usage(ks.priced_choice(np.zeros((m, 2)))[0]) > CAPACITY).any():
            pick, bound = ks.search()
            want_pick, want_bound = _np_search(ks)
            np.testing.assert_array_equal(pick, want_pick)
            assert bound == want_bound and ks.value(pick) == _np_value(ks, want_pick)
            searched += 1
        env.step(np.zeros(n, np.int64))
    assert searched >= 10
