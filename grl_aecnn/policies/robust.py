"""Robust planner: the slot decision that maximises *expected* reward under the known
estimate-error model, by sample-average approximation (SAA).

It sees only what every policy sees (the estimated slot) plus the error model the simulator
draws from (`grl_aecnn.sim.core.sample_realisations`): K realisations of channel and capacity
given the estimates, the same K for every candidate (common random numbers), and the
objective is the mean slot reward over them under the real allocation. The search starts from
the better (on the draws) of the planner's decision (the oracle's solver trusting the
estimates) and every task on its cheapest option, and applies the best single-device
change while the sampled mean improves, a change being a device going local or taking an
option that can be optimal on the estimates (feasible, better than local, not dominated); with an error-free model
the K draws equal the estimate and it returns the planner's decision unchanged. It is the
strongest deployable reference: a learned policy is judged against it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from grl_aecnn.policies.base import Observation
from grl_aecnn.policies.oracle import candidate_mask, solve_slot
from grl_aecnn.policies.candidates import DrawTable, draw_table, expected_rewards, hill_climb
from grl_aecnn.sim.core import OptionTable, encode_action, error_free, option_table, sample_realisations

if TYPE_CHECKING:
    from grl_aecnn.sim.env import MECEnv



class RobustPlanner:
    """SAA over `samples` realisations; at most `max_moves` improving changes per slot."""

    name = "robust-planner"

    def __init__(self, samples: int = 32, max_moves: int = 64, seed: int = 0) -> None:
        if samples < 1 or max_moves < 0:
            raise ValueError(f"samples must be >= 1 and max_moves >= 0, got {samples}, {max_moves}")
        self.samples, self.max_moves = samples, max_moves
        self.rng = np.random.default_rng(seed)
        self.stats = {"slots": 0, "moves": 0, "solve_s": 0.0}

    def bind(self, env: "MECEnv") -> None:
        self.env = env

    def act(self, obs: Observation) -> np.ndarray:
        start = time.perf_counter()
        env, sc = self.env, self.env.scenario
        est = env.estimated_state()
        table = option_table(sc, env.points, est)
        choice, _ = solve_slot(table)
        if not error_free(sc):
            draws = draw_table(sc, env.points, sample_realisations(sc, est, self.samples, self.rng))
            starts = np.stack([choice, cheapest(table, env.points.num)])
            choice = starts[int(np.argmax(expected_rewards(draws, starts)))]
            choice = self.improve(choice, moves(table, env.points.num), table=draws)
        self.stats["slots"] += 1
        self.stats["solve_s"] += time.perf_counter() - start
        action = np.zeros(obs["device_mask"].shape[0], dtype=np.int64)
        action[: choice.size] = choice
        return action

    def improve(self, choice: np.ndarray, options: tuple[np.ndarray, np.ndarray], table: DrawTable) -> np.ndarray:
        """Best single-device changes among `options` (device, action) while the sample mean improves."""
        if options[0].size == 0:
            return choice
        value = float(expected_rewards(table, choice[None])[0])
        choice, moved = hill_climb(table, choice, value, options, self.max_moves)
        self.stats["moves"] += moved
        return choice

    def summary(self) -> dict[str, float]:
        slots = max(self.stats["slots"], 1)
        return {"robust_moves_per_slot": self.stats["moves"] / slots,
                "robust_ms_per_slot": 1e3 * self.stats["solve_s"] / slots}


def moves(table: OptionTable, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The (device, action) changes worth trying: run locally, or an option that can be part of
    an optimum on the estimates (`candidate_mask`: feasible, better than local, not dominated)."""
    dev, srv, pt = np.nonzero(candidate_mask(table))
    deciding = np.flatnonzero(table.task)
    return (np.concatenate([deciding, dev]),
            np.concatenate([np.zeros(deciding.size, dtype=np.int64), encode_action(srv, pt, num_points)]))


def cheapest(table: OptionTable, num_points: int) -> np.ndarray:
    """Every task on its best-estimated server with the point needing the least resources: the
    start that serves most tasks when the estimates are optimistic."""
    need = np.maximum(table.b, table.c)  # (N, M, V)
    flat = need.reshape(need.shape[0], -1).argmin(axis=1)
    server, point = np.divmod(flat, num_points)
    return np.where(table.task, encode_action(server, point, num_points), 0).astype(np.int64)
