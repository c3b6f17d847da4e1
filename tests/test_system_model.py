"""One system model: `slot_outcome` (the simulator), `option_table` (the solvers) and the critics'
`DrawTable` agree on random states and actions, infeasible ones included; difference rewards
are the marginal contributions they claim to be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grl_aecnn.policies.candidates import draw_table, expected_rewards
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.core import (SlotState, decode_actions, difference_rewards, encode_action, option_table,
                                slot_outcome)
from grl_aecnn.sim.points import point_table
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = load_profile(Path(__file__).parent / "fixtures" / "profile_small.json")
POINTS = point_table(PROFILE, ["aecnn", "deepjscc"])  # digital and analog points
TOL = 1e-9


@st.composite
def slots(draw, batch: int = 1, decisions: int = 1):
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sc = ScenarioConfig(num_devices=n, num_servers=m, penalty=draw(st.sampled_from([0.0, 1.0, 2.5])),
                        bandwidth_hz=draw(st.sampled_from([5e4, 4e5, 2e6])))
    # Log-uniform gains, capacities, rates and deadlines: from hopeless to easy.
    state = SlotState(
        gain=10.0 ** rng.uniform(-13, -6, (batch, n, m)),
        capacity=10.0 ** rng.uniform(8.5, 11, (batch, m)),
        device_flops=10.0 ** rng.uniform(8, 9.5, (batch, n)),
        deadline=10.0 ** rng.uniform(-3, -1, (batch, n)),
        task=rng.random((batch, n)) < 0.8,
        distance=rng.uniform(1, 100, (batch, n, m)),
    )
    actions = rng.integers(0, 1 + m * POINTS.num, (decisions, n))
    return sc, state, actions


@settings(max_examples=300, deadline=None)
@given(slots())
def test_outcome_and_option_table_agree(case) -> None:
    sc, state, actions = case
    table = option_table(sc, POINTS, state)
    out = slot_outcome(sc, POINTS, state, actions)
    off, m, v = decode_actions(actions[0], POINTS.num)
    off &= state.task[0]
    for n in np.flatnonzero(~off):  # local (or no task): the table's local value is the reward
        assert out.reward[0, n] == table.local_value[n]
    b, c = table.b[np.arange(m.size), m, v], table.c[np.arange(m.size), m, v]
    for server in range(sc.num_servers):
        on = np.flatnonzero(off & (m == server))
        if on.size == 0:
            continue
        if b[on].sum() <= 1 - TOL and c[on].sum() <= 1 - TOL:
            # Everything the table says fits together is admitted and on time, at the table's accuracy.
            assert out.on_time[0, on].all()
            assert np.allclose(out.reward[0, on], table.accuracy[on, server, v[on]])
        for n in on:
            if max(b[n], c[n]) > 1 + TOL:  # the table says impossible even alone: late
                assert not out.on_time[0, n] and out.reward[0, n] == -sc.penalty
            if on.size == 1 and max(b[n], c[n]) <= 1 - TOL:  # alone and feasible: on time
                assert out.on_time[0, n]


@settings(max_examples=200, deadline=None)
@given(slots(batch=5, decisions=7))
def test_critic_scores_equal_the_simulated_mean_reward(case) -> None:
    """Scoring candidates on a `DrawTable` gives each decision's mean `slot_outcome` reward over the draws."""
    sc, draws, candidates = case
    scores = expected_rewards(draw_table(sc, POINTS, draws), candidates)
    for cand, score in zip(candidates, scores):
        out = slot_outcome(sc, POINTS, draws, np.repeat(cand[None], draws.task.shape[0], axis=0))
        assert np.isclose(score, out.reward.sum(axis=1).mean(), rtol=0, atol=1e-9)


def test_action_code_round_trips() -> None:
    m, v = np.meshgrid(np.arange(4), np.arange(7), indexing="ij")
    code = encode_action(m, v, 7)
    assert sorted(code.ravel().tolist()) == list(range(1, 1 + 4 * 7))
    off, m2, v2 = decode_actions(code, 7)
    assert off.all() and (m2 == m).all() and (v2 == v).all()
    assert not decode_actions(np.array([0]), 7)[0].any()


@settings(max_examples=200, deadline=None)
@given(slots())
def test_difference_rewards_are_marginal_contributions(case) -> None:
    sc, state, actions = case
    out = slot_outcome(sc, POINTS, state, actions)
    diff = difference_rewards(sc, POINTS, state, actions, out.reward)
    for n in range(sc.num_devices):
        alone = actions.copy()
        alone[0, n] = 0
        without = slot_outcome(sc, POINTS, state, alone).reward.sum()
        assert np.isclose(diff[0, n], out.reward.sum() - without)
        if actions[0, n] == 0 or not state.task[0, n]:
            assert diff[0, n] == 0  # a local device (or one without a task) changes nothing
    # A device offloading alone affects nobody else: its marginal contribution is its own gain.
    for n in np.flatnonzero(state.task[0] & (actions[0] > 0)):
        single = np.zeros_like(actions)
        single[0, n] = actions[0, n]
        r = slot_outcome(sc, POINTS, state, single).reward
        d = difference_rewards(sc, POINTS, state, single, r)
        local = slot_outcome(sc, POINTS, state, np.zeros_like(actions)).reward
        assert np.isclose(d[0, n], r[0, n] - local[0, n])
