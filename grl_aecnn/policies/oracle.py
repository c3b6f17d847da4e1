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
  optimality. It is compiled (numba): the evaluation solves every slot of every scenario row
  six times (four oracles, the planner, the robust planner's start);
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

import numba
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, vstack

from grl_aecnn.policies.base import Observation
from grl_aecnn.sim.allocation import stable_order
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
        return _usage(self.use, pick)

    def value(self, pick: np.ndarray) -> float:
        return _value(self.gain, pick)

    def actions(self, pick: np.ndarray) -> np.ndarray:
        action = np.zeros(self.n, dtype=np.int64)
        has = pick >= 0
        k = pick[has]
        action[has] = encode_action(self.srv[k], self.pt[k], self.v)
        return action

    def priced_choice(self, price: np.ndarray) -> tuple[np.ndarray, float]:
        """Each device's best option at resource prices (M, 2), and the Lagrangian bound."""
        return _priced_choice(self.dev, self.srv, self.gain, self.use, np.ascontiguousarray(price, np.float64), self.n)

    def search(self) -> tuple[np.ndarray, float]:
        """The "search" method's choice (pick per device) and the Lagrangian upper bound."""
        return _lagrangian_search(self.dev, self.srv, self.gain, self.use, self.n)


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
    pick, bound = ks.search()
    value = ks.value(pick)
    return ks.actions(pick), max(bound - value, 0.0) / max(abs(bound), 1e-12)


# The search, compiled. Sums keep NumPy's order (`_sum`), so it makes the decisions of its NumPy
# statement in tests/test_policies.py, bit for bit.

@numba.njit(cache=True, nogil=True)
def _sum(a: np.ndarray) -> float:
    """``np.sum`` of a 1-D float64 array in NumPy's pairwise order, bit for bit: blocks of at most
    128 summed 8-way, halves (cut at a multiple of 8) added. The halving runs on an explicit stack
    (numba cannot cache a recursive function)."""
    lo_stack, n_stack = np.empty(192, np.int64), np.empty(192, np.int64)
    values = np.empty(64)
    lo_stack[0], n_stack[0], top, count = 0, a.size, 1, 0
    while top:
        top -= 1
        lo, n = lo_stack[top], n_stack[top]
        if n < 0:  # both halves are done: add them, left first
            count -= 1
            values[count - 1] += values[count]
        elif n <= 128:
            values[count] = _block_sum(a, lo, n)
            count += 1
        else:
            half = n // 2 - n // 2 % 8
            lo_stack[top], n_stack[top] = 0, -1
            lo_stack[top + 1], n_stack[top + 1] = lo + half, n - half
            lo_stack[top + 2], n_stack[top + 2] = lo, half
            top += 3
    return values[0]


@numba.njit(cache=True, nogil=True)
def _block_sum(a: np.ndarray, lo: int, n: int) -> float:
    """NumPy's sum of a[lo:lo + n], n <= 128: in order below 8 values, else 8 running sums."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r = np.empty(8)
    for j in range(8):
        r[j] = a[lo + j]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] += a[lo + i + j]
        i += 8
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for j in range(lo + i, lo + n):
        res += a[j]
    return res


@numba.njit(cache=True, nogil=True)
def _usage(use: np.ndarray, pick: np.ndarray) -> np.ndarray:
    out = np.zeros(use.shape[1:])
    for k in pick:
        if k >= 0:
            out += use[k]
    return out


@numba.njit(cache=True, nogil=True)
def _value(gain: np.ndarray, pick: np.ndarray) -> float:
    chosen = np.empty(pick.size)
    count = 0
    for k in pick:
        if k >= 0:
            chosen[count] = gain[k]
            count += 1
    return _sum(chosen[:count])


@numba.njit(cache=True, nogil=True)
def _priced_choice(dev: np.ndarray, srv: np.ndarray, gain: np.ndarray, use: np.ndarray, price: np.ndarray,
                   n: int) -> tuple[np.ndarray, float]:
    """Each device's option of highest priced gain, if positive (ties: the highest index), and the
    Lagrangian bound. An option uses only its own server, so its price is one product per resource."""
    best = np.full(n, -1)
    best_score = np.zeros(n)
    for k in range(gain.size):
        s = srv[k]
        score = gain[k] - (use[k, s, 0] * price[s, 0] + use[k, s, 1] * price[s, 1])
        if score > 0 and (best[dev[k]] < 0 or score >= best_score[dev[k]]):
            best[dev[k]], best_score[dev[k]] = k, score
    return best, _sum(best_score) + CAPACITY * _sum(price.ravel())


@numba.njit(cache=True, nogil=True)
def _lagrangian_search(dev: np.ndarray, srv: np.ndarray, gain: np.ndarray, use: np.ndarray,
                       n: int) -> tuple[np.ndarray, float]:
    """Projected subgradient on the 2M prices (the bound, and the priced choice of the best bound
    as a start), then repair and local search from it and from `_count_first`; the better wins."""
    m = use.shape[1]
    price = np.zeros((m, 2))
    bound, start = np.inf, np.full(n, -1)
    scale = gain.max()
    for step in range(SUBGRADIENT_STEPS):
        choice, lag = _priced_choice(dev, srv, gain, use, price, n)
        if lag < bound:
            bound, start = lag, choice
        excess = _usage(use, choice) - CAPACITY
        slack = True  # complementary slackness: the priced choice is optimal
        for s in range(m):
            for r in range(2):
                slack &= excess[s, r] <= 0 and abs(price[s, r] * excess[s, r]) <= 1e-8
        if slack:
            break
        step_size = scale / np.sqrt(step + 1.0)
        for s in range(m):
            for r in range(2):
                price[s, r] = max(price[s, r] + step_size * excess[s, r], 0.0)
    best, best_val = np.full(n, -1), 0.0
    for first in (start, _count_first(dev, use, n)):
        pick = _local_search(dev, gain, use, _repair(gain, use, first.copy()))
        if _value(gain, pick) > best_val:
            best, best_val = pick, _value(gain, pick)
    return best, bound


@numba.njit(cache=True, nogil=True)
def _fits(room: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a + b (M, 2) fits in room in every resource of every server."""
    for s in range(room.shape[0]):
        for r in range(2):
            if a[s, r] + b[s, r] > room[s, r]:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _count_first(dev: np.ndarray, use: np.ndarray, n: int) -> np.ndarray:
    """Serve as many tasks as possible first: devices in order of their smallest need take
    their cheapest option (largest remaining room after it) that fits."""
    pick = np.full(n, -1)
    room = np.full(use.shape[1:], CAPACITY)
    smallest = np.full(n, np.inf)
    for k in range(dev.size):
        smallest[dev[k]] = min(smallest[dev[k]], use[k].max())
    order = np.empty(n, dtype=np.int64)
    stable_order(smallest, order)
    nothing = np.zeros_like(room)
    for d in order:
        best, best_left = -1, -np.inf
        for k in range(dev.size):
            if dev[k] == d and _fits(room, use[k], nothing):
                left = (room - use[k]).min()
                if left > best_left:
                    best, best_left = k, left
        if best >= 0:
            pick[d] = best
            room -= use[best]
    return pick


@numba.njit(cache=True, nogil=True)
def _repair(gain: np.ndarray, use: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Send devices back to local, least gain per unit of overused resource first, until feasible."""
    while True:
        over = _usage(use, pick) > CAPACITY
        if not over.any():
            return pick
        worst, worst_ratio = -1, np.inf
        for d in range(pick.size):
            k = pick[d]
            if k < 0:
                continue
            load = 0.0
            for s in range(use.shape[1]):
                load += use[k, s, 0] * over[s, 0] + use[k, s, 1] * over[s, 1]
            ratio = gain[k] / max(load, 1e-12) if load > 0 else np.inf
            if worst < 0 or ratio < worst_ratio:
                worst, worst_ratio = d, ratio
        pick[worst] = -1


@numba.njit(cache=True, nogil=True)
def _local_search(dev: np.ndarray, gain: np.ndarray, use: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Best-improvement pair moves until none helps.

    A move applies up to two changes on distinct devices, each change being "device d takes
    option k" or "device d runs locally" (or nothing), so it can shrink one task's option to
    make room for another's - the move single changes cannot make. Changes are numbered: the
    K options, then the N drops (device to local), then the no-op; the first best move wins.
    """
    n, nk, m = pick.size, dev.size, use.shape[1]
    count = nk + n + 1
    owner = np.full(count, -1)  # whose decision a change sets (-1: the no-op)
    owner[:nk] = dev
    owner[nk:nk + n] = np.arange(n)
    d = np.zeros((count, m, 2))  # each change's resource delta (the no-op's stays 0)
    delta = np.zeros(count)  # and its gain delta
    alone = np.zeros(count, dtype=np.bool_)
    nothing = np.zeros((m, 2))
    while True:
        room = np.zeros((m, 2))
        for j in range(n):
            if pick[j] >= 0:
                room += use[pick[j]]
        room = CAPACITY - room
        for e in range(nk + n):
            k = pick[owner[e]]
            delta[e] = (gain[e] if e < nk else 0.0) - (gain[k] if k >= 0 else 0.0)
            for s in range(m):
                for r in range(2):
                    d[e, s, r] = (use[e, s, r] if e < nk else 0.0) - (use[k, s, r] if k >= 0 else 0.0)
        best, best_delta = 0, -np.inf
        for e in range(count):
            alone[e] = _fits(room, d[e], nothing)
            if alone[e] and delta[e] > best_delta:
                best, best_delta = e, delta[e]
        if best_delta > 1e-12:
            _apply(dev, pick, best)
            continue
        # No single change helps: score pairs (first changes that cannot fit alone pruned).
        first, second, best_score = -1, -1, -np.inf
        for i in range(count):
            if not (alone[i] or d[i].max() <= 0):
                continue
            for j in range(count):
                if owner[i] == owner[j] and owner[i] >= 0:
                    continue
                score = delta[i] + delta[j]
                if score > best_score and _fits(room, d[i], d[j]):
                    first, second, best_score = i, j, score
        if best_score <= 1e-12:
            return pick
        _apply(dev, pick, first)
        _apply(dev, pick, second)


@numba.njit(cache=True, nogil=True)
def _apply(dev: np.ndarray, pick: np.ndarray, e: int) -> None:
    """Apply change e: an option index, then N drops (device to local), then the no-op."""
    if e < dev.size:
        pick[dev[e]] = e
    elif e < dev.size + pick.size:
        pick[e - dev.size] = -1


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
