"""Perfect-information oracle: the best decision for the realised slot, given the allocation.

It reads the realised channel and capacity (`env.realised_state()`, a privileged hook) and
maximises the slot reward over all decisions. Under the allocation of `grl_aecnn.sim.allocation`
a set of offloaded tasks is served on time iff, per server, their minimum share pairs sum to
<= 1 in both resources (all fit -> all admitted), so the slot problem is a multiple-choice
knapsack with two constraints per server:

    max sum_o g_o x_o   s.t.  sum_{o of device n} x_o <= 1,
    sum_{o on server m} b_o x_o <= 1,  sum_{o on server m} c_o x_o <= 1,

with g_o the reward gained over running locally. Options that cannot win are removed first
(offloads not better than local, Pareto-dominated points). Then:
- if every device's best option fits together, that is the optimum (exact);
- else (method "search", the default) a Lagrangian heuristic: projected subgradient on the
  2M resource prices gives an upper bound (weak duality) and priced choices; these are
  repaired to feasibility and improved by local search (single changes and drop-one/change-one
  pairs) until no move helps. The gap to the bound is recorded per slot; a zero gap proves
  optimality;
- method "milp" solves the MILP exactly with HiGHS (scipy.optimize.milp): exact but seconds
  per slot on congested 14x2 slots, so it is for checking the search on small networks.
`stats` reports how slots were solved, the mean and largest relative gap, and the solve time.

With ``state="estimated"`` the same solver plans on the policy's own view (the estimated
channel and the lagged capacity): a deployable certainty-equivalent planner. Its distance to
the oracle is what imperfect knowledge costs a planner that trusts its estimates, which tells
how much of a learned policy's gap to the oracle is the information, not the learning.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, vstack

from grl_aecnn.policies.base import Observation
from grl_aecnn.sim.core import OptionTable, encode_action, option_table

if TYPE_CHECKING:
    from grl_aecnn.sim.env import MECEnv

# Capacity used by the solver: a hair under 1 so solver tolerances never overfill a server.
CAPACITY = 1.0 - 1e-7
SUBGRADIENT_STEPS = 60


STATES = ("realised", "estimated")


class Oracle:
    """Best decision on the realised slot, or on the estimated one (the planner); method
    "search" or "milp", see the module doc."""

    name = "oracle"

    def __init__(self, method: str = "search", time_limit_s: float = 30.0, state: str = "realised") -> None:
        if method not in ("search", "milp"):
            raise ValueError(f"method must be 'search' or 'milp', got {method!r}")
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        self.method, self.state = method, state
        self.time_limit_s = time_limit_s
        self.stats = {"slots": 0, "exact": 0, "gap_sum": 0.0, "max_gap": 0.0, "solve_s": 0.0}

    def bind(self, env: "MECEnv") -> None:
        self.env = env

    def act(self, obs: Observation) -> np.ndarray:
        env = self.env
        start = time.perf_counter()
        view = env.realised_state() if self.state == "realised" else env.estimated_state()
        table = option_table(env.scenario, env.points, view)
        choice, gap = solve_slot(table, self.method, self.time_limit_s)
        st = self.stats
        st["slots"] += 1
        st["exact"] += int(gap <= 1e-9)
        st["gap_sum"] += gap
        st["max_gap"] = max(st["max_gap"], gap)
        st["solve_s"] += time.perf_counter() - start
        action = np.zeros(obs["device_mask"].shape[0], dtype=np.int64)
        action[: choice.size] = choice
        return action

    def summary(self) -> dict[str, float]:
        n = max(self.stats["slots"], 1)
        return {"oracle_slots": self.stats["slots"], "oracle_exact_fraction": self.stats["exact"] / n,
                "oracle_mean_gap": self.stats["gap_sum"] / n, "oracle_max_gap": self.stats["max_gap"],
                "oracle_ms_per_slot": 1e3 * self.stats["solve_s"] / n}


def candidate_mask(t: OptionTable) -> np.ndarray:
    """(N, M, V) options that can be part of an optimum."""
    ok = (t.b <= CAPACITY) & (t.c <= CAPACITY) & (t.accuracy > t.local_value[:, None, None])
    ok &= t.task[:, None, None]
    val, b, c = t.accuracy, t.b, t.c
    # Pareto filter per (device, server): drop v if some w is at least as good in all three
    # (value, b, c) and strictly better in one, or equal and earlier.
    ge = ((val[..., None, :] >= val[..., :, None]) & (b[..., None, :] <= b[..., :, None])
          & (c[..., None, :] <= c[..., :, None]) & ok[..., None, :])
    strict = ((val[..., None, :] > val[..., :, None]) | (b[..., None, :] < b[..., :, None])
              | (c[..., None, :] < c[..., :, None]))
    v = val.shape[-1]
    earlier = np.tril(np.ones((v, v), bool), -1)  # [i, j]: j < i
    dominated = (ge & (strict | earlier)).any(axis=-1)
    return ok & ~dominated


class Knapsack:
    """The reduced slot problem: K options, each of one device, with usage on one server."""

    def __init__(self, t: OptionTable) -> None:
        self.n, self.m, self.v = t.b.shape
        self.dev, self.srv, self.pt = np.nonzero(candidate_mask(t))
        self.gain = t.accuracy[self.dev, self.srv, self.pt] - t.local_value[self.dev]
        # use[k, m, r]: option k's share of resource r (0 bandwidth, 1 compute) on server m.
        self.use = np.zeros((self.dev.size, self.m, 2))
        self.use[np.arange(self.dev.size), self.srv, 0] = t.b[self.dev, self.srv, self.pt]
        self.use[np.arange(self.dev.size), self.srv, 1] = t.c[self.dev, self.srv, self.pt]

    def usage(self, pick: np.ndarray) -> np.ndarray:
        """(M, 2) resources used by a choice (pick[n] = option index or -1)."""
        chosen = pick[pick >= 0]
        return self.use[chosen].sum(axis=0)

    def value(self, pick: np.ndarray) -> float:
        return float(self.gain[pick[pick >= 0]].sum())

    def actions(self, pick: np.ndarray) -> np.ndarray:
        action = np.zeros(self.n, dtype=np.int64)
        has = pick >= 0
        k = pick[has]
        action[has] = encode_action(self.srv[k], self.pt[k], self.v)
        return action

    def priced_choice(self, price: np.ndarray) -> tuple[np.ndarray, float]:
        """Each device's best option at resource prices (M, 2), and the Lagrangian bound."""
        score = self.gain - (self.use * price[None]).sum(axis=(1, 2))
        best = np.full(self.n, -1)
        best_score = np.zeros(self.n)
        order = np.argsort(score, kind="stable")  # later (larger) writes win
        keep = score[order] > 0
        best[self.dev[order[keep]]] = order[keep]
        best_score[self.dev[order[keep]]] = score[order[keep]]
        return best, float(best_score.sum() + CAPACITY * price.sum())


def solve_slot(t: OptionTable, method: str = "search", time_limit_s: float = 30.0) -> tuple[np.ndarray, float]:
    """Per device the action maximising the slot reward, and the relative optimality gap."""
    ks = Knapsack(t)
    if ks.dev.size == 0:
        return np.zeros(ks.n, dtype=np.int64), 0.0
    best, _ = ks.priced_choice(np.zeros((ks.m, 2)))
    if (ks.usage(best) <= CAPACITY).all():
        return ks.actions(best), 0.0
    if method == "milp":
        return _solve_milp(ks, time_limit_s)
    pick, bound = _lagrangian_search(ks)
    value = ks.value(pick)
    return ks.actions(pick), max(bound - value, 0.0) / max(abs(bound), 1e-12)


def _lagrangian_search(ks: Knapsack) -> tuple[np.ndarray, float]:
    price = np.zeros((ks.m, 2))
    bound, starts = np.inf, []
    scale = float(ks.gain.max())
    for step in range(SUBGRADIENT_STEPS):
        choice, lag = ks.priced_choice(price)
        if lag < bound:
            bound = lag
            starts.append(choice)
        excess = ks.usage(choice) - CAPACITY
        if (excess <= 0).all() and np.allclose(price * excess, 0):
            break  # complementary slackness: the priced choice is optimal
        price = np.maximum(price + scale / np.sqrt(step + 1.0) * excess, 0.0)
    best, best_val = np.full(ks.n, -1), 0.0
    for start in (starts[-1], _count_first(ks)):
        pick = _local_search(ks, _repair(ks, start.copy()))
        if ks.value(pick) > best_val:
            best, best_val = pick, ks.value(pick)
    return best, bound


def _count_first(ks: Knapsack) -> np.ndarray:
    """Serve as many tasks as possible first: devices in order of their smallest need take
    their cheapest option (largest remaining room after it) that fits."""
    need = ks.use.max(axis=(1, 2))
    pick = np.full(ks.n, -1)
    room = np.full((ks.m, 2), CAPACITY)
    smallest = np.full(ks.n, np.inf)
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


def _repair(ks: Knapsack, pick: np.ndarray) -> np.ndarray:
    """Send devices back to local, least gain per unit of overused resource first, until feasible."""
    while True:
        over = ks.usage(pick) > CAPACITY
        if not over.any():
            return pick
        on = np.flatnonzero(pick >= 0)
        load = (ks.use[pick[on]] * over[None]).sum(axis=(1, 2))
        ratio = np.where(load > 0, ks.gain[pick[on]] / np.maximum(load, 1e-12), np.inf)
        pick[on[int(np.argmin(ratio))]] = -1


def _local_search(ks: Knapsack, pick: np.ndarray) -> np.ndarray:
    """Best-improvement pair moves until none helps.

    A move applies up to two changes on distinct devices, each change being "device d takes
    option k" or "device d runs locally" (or nothing), so it can shrink one task's option to
    make room for another's - the move single changes cannot make.
    """
    n = ks.n
    ext_dev = np.concatenate([ks.dev, np.arange(n), [-1]])  # options, then drops, then no-op
    noop = ext_dev < 0
    while True:
        on = pick >= 0
        cur = np.where(on, ks.gain[np.maximum(pick, 0)], 0.0)
        contrib = np.where(on[:, None, None], ks.use[np.maximum(pick, 0)], 0.0)  # (N, M, 2)
        room = CAPACITY - contrib.sum(axis=0)  # (M, 2)
        d = np.concatenate([ks.use - contrib[ks.dev], -contrib, np.zeros((1, ks.m, 2))])
        delta = np.concatenate([ks.gain - cur[ks.dev], -cur, [0.0]])
        alone = (d <= room[None]).all(axis=(1, 2))
        single = np.where(alone, delta, -np.inf)
        best = int(np.argmax(single))
        if single[best] > 1e-12:
            _apply(ks, pick, best)
            continue
        # No single change helps: score pairs (first changes that cannot fit alone pruned).
        first = np.flatnonzero(alone | (d.max(axis=(1, 2)) <= 0))
        fits = ((d[first][:, None] + d[None, :]) <= room[None, None]).all(axis=(2, 3))
        distinct = (ext_dev[first][:, None] != ext_dev[None, :]) | noop[first][:, None] | noop[None, :]
        score = np.where(fits & distinct, delta[first][:, None] + delta[None, :], -np.inf)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] <= 1e-12:
            return pick
        _apply(ks, pick, int(first[i]))
        _apply(ks, pick, int(j))


def _apply(ks: Knapsack, pick: np.ndarray, e: int) -> None:
    """Apply change e: an option index, then N drops (device to local), then the no-op."""
    nk = ks.dev.size
    if e < nk:
        pick[ks.dev[e]] = e
    elif e < nk + ks.n:
        pick[e - nk] = -1


def _solve_milp(ks: Knapsack, time_limit_s: float) -> tuple[np.ndarray, float]:
    k = ks.dev.size
    cols = np.arange(k)
    rows = [coo_matrix((np.ones(k), (ks.dev, cols)), shape=(ks.n, k))]
    for r in range(2):
        rows.append(coo_matrix((ks.use[cols, ks.srv, r], (ks.srv, cols)), shape=(ks.m, k)))
    upper = np.concatenate([np.ones(ks.n), np.full(2 * ks.m, CAPACITY)])
    res = milp(-ks.gain, integrality=np.ones(k), bounds=Bounds(0, 1),
               constraints=LinearConstraint(vstack(rows).tocsr(), -np.inf, upper),
               options={"mip_rel_gap": 0.0, "time_limit": time_limit_s})
    if res.x is None:
        raise RuntimeError(f"oracle MILP failed: {res.message}")
    pick = np.full(ks.n, -1)
    chosen = np.flatnonzero(res.x > 0.5)
    pick[ks.dev[chosen]] = chosen
    return ks.actions(pick), float(res.mip_gap or 0.0)
