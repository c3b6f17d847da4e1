"""Candidate decisions from a policy's per-device logits, and the model-based critic that picks one.

DROO (Huang et al. 2020) and the graph actor-critics built on it act in two steps: the actor
network scores every action of every device, a few joint decisions are generated from those
scores, and a critic that knows the system model keeps the best of them. The actor alone
decides each device independently (its argmax); the critic sees the joint effect of the
candidates on the shared band and servers, which is what a per-device argmax cannot.

Candidates (all within the action mask):
- order-preserving quantisation (DROO): the argmax, then the devices flipped to their second
  choice in increasing order of their logit margin, one more device per candidate;
- cut-backs: the argmax with its least convincing offloads (smallest margin over local) run
  locally instead, one more device per candidate: under congestion the second choice is
  usually another offload, and these reach the decisions that relieve a crowded server;
- draws from the actor's per-device softmax: the actor's own uncertainty, beyond the second
  choice.

Critic. `expected_rewards` is the one definition of a decision's expected slot reward under
the known estimate-error model: its mean reward over K realisations of channel and capacity
drawn given the estimates (`grl_aecnn.sim.core.sample_realisations`), the same K for every
candidate (common random numbers). With an error-free model the one realisation is the
estimate itself. It uses only what the policy sees plus the error model, so it is deployable;
the robust planner maximises the same objective by search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from grl_aecnn.policies.settings import ACTOR_ONLY, CriticConfig
from grl_aecnn.sim.allocation import admit_sorted, stable_order
from grl_aecnn.sim.core import SlotState, error_free, local_outcome, option_grid, sample_realisations
from grl_aecnn.sim.points import PointTable
from grl_aecnn.sim.settings import ScenarioConfig

IMPROVEMENT = 1e-9  # a change must raise the sampled mean by more than this (`hill_climb`)


def order_preserving(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Up to k order-preserving candidates (k', N_max) from per-device logits (N_max, A)."""
    return _order_preserving(logits, mask, k)


def to_local(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Up to k candidates (k', N_max) that cut the actor's offloads back: the argmax with the
    1, 2, ... offloading devices whose best offload beats local by the least run locally instead.
    Order-preserving flips reach only each device's second choice, which under congestion is
    usually another offload; these reach the decisions that relieve a crowded band or server."""
    return _to_local(logits, mask, k)


def least_confident(logits: np.ndarray, mask: np.ndarray, most: int) -> np.ndarray:
    """The (at most ``most``) devices with a choice whose two best actions are closest in logit."""
    return _least_confident(_masked(logits, mask), most)


def single_changes(logits: np.ndarray, mask: np.ndarray, choices: int,
                   devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(device, action) pairs a polish step may try: every device with a choice to local, and
    each of ``devices`` to one of its ``choices`` best-scored offloads. The actor prunes the
    search: of the 1 + M V actions of a device only these few are ever scored, and other
    offloads only for the devices it is least sure of. Local stays open to all, since in a
    crowded slot the actor can be sure of an offload that no longer fits."""
    return _single_changes(logits, mask, choices, np.asarray(devices, dtype=np.int64))


def sampled(logits: np.ndarray, mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` decisions (count, N_max) drawn from the per-device softmax over allowed actions."""
    return _sampled(logits, mask, rng.random((count, logits.shape[0])))


# The candidate generators compiled: each is a handful of per-device sorts over some 30 x 17
# logits, where NumPy's per-call overhead, not the arithmetic, was most of a slot's decision
# time (bench/bench_policy.py). Scores keep the logits' dtype, so margins round as the actor's own.

@numba.njit(cache=True, nogil=True)
def _masked(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The logits with every action outside the mask at -inf."""
    out = np.empty(logits.shape, dtype=logits.dtype)
    for j in range(logits.shape[0]):
        for a in range(logits.shape[1]):
            out[j, a] = logits[j, a] if mask[j, a] > 0 else -np.inf
    return out


@numba.njit(cache=True, nogil=True)
def _best_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each device's best and second-best action, the earliest of equal scores (the first two
    entries of a stable descending sort)."""
    n, width = scores.shape
    first, second = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for j in range(n):
        best = 0
        for a in range(1, width):
            if scores[j, a] > scores[j, best]:
                best = a
        runner = 1 if best == 0 else 0
        for a in range(runner + 1, width):
            if a != best and scores[j, a] > scores[j, runner]:
                runner = a
        first[j], second[j] = best, runner
    return first, second


@numba.njit(cache=True, nogil=True)
def _least_confident(scores: np.ndarray, most: int) -> np.ndarray:
    first, second = _best_two(scores)
    n = scores.shape[0]
    margin = np.full(n, np.inf, dtype=scores.dtype)
    choosers = 0
    for j in range(n):
        if np.isfinite(scores[j, second[j]]):
            margin[j] = scores[j, first[j]] - scores[j, second[j]]
            choosers += 1
    return np.argsort(margin, kind="mergesort")[: min(most, choosers)]


@numba.njit(cache=True, nogil=True)
def _order_preserving(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    scores = _masked(logits, mask)
    first, second = _best_two(scores)
    ranked = _least_confident(scores, k - 1)
    cands = np.empty((1 + ranked.size, first.size), dtype=np.int64)
    for i in range(1 + ranked.size):  # row i: the i least confident devices on their second choice
        cands[i] = first
        for r in range(i):
            cands[i, ranked[r]] = second[ranked[r]]
    return cands


@numba.njit(cache=True, nogil=True)
def _to_local(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    scores = _masked(logits, mask)
    first, _ = _best_two(scores)
    offloading = np.flatnonzero(first > 0)
    margin = np.empty(offloading.size, dtype=scores.dtype)
    for i in range(offloading.size):
        j = offloading[i]
        margin[i] = scores[j, first[j]] - scores[j, 0]
    ranked = offloading[np.argsort(margin, kind="mergesort")][:k]
    cands = np.empty((ranked.size, first.size), dtype=np.int64)
    for i in range(ranked.size):  # row i: the i + 1 least convincing offloads run locally
        cands[i] = first
        for r in range(i + 1):
            cands[i, ranked[r]] = 0
    return cands


@numba.njit(cache=True, nogil=True)
def _single_changes(logits: np.ndarray, mask: np.ndarray, choices: int,
                    devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, width = mask.shape
    device, action = [], []
    for j in range(n):
        allowed = 0
        for a in range(width):
            allowed += mask[j, a] > 0
        if mask[j, 0] > 0 and allowed > 1:
            device.append(j)
            action.append(0)
    scores = _masked(logits, mask)
    for j in devices:
        row = scores[j].copy()
        row[0] = -np.inf
        order = np.argsort(-row, kind="mergesort")
        for a in order[:choices]:
            if np.isfinite(row[a]):
                device.append(j)
                action.append(a)
    return np.array(device, dtype=np.int64), np.array(action, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _sampled(logits: np.ndarray, mask: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: device j of decision i takes the first action whose cumulative
    softmax probability reaches ``u[i, j]``."""
    scores = _masked(logits, mask)
    n, width = scores.shape
    cdf = np.empty((n, width))
    for j in range(n):
        p = np.exp(scores[j] - scores[j].max())
        cdf[j] = np.cumsum(p / p.sum())
    out = np.empty(u.shape, dtype=np.int64)
    for i in range(u.shape[0]):
        for j in range(n):
            a = 0
            while a < width - 1 and u[i, j] > cdf[j, a]:
                a += 1
            out[i, j] = a
    return out


def realisations(sc: ScenarioConfig, est: SlotState, samples: int, rng: np.random.Generator) -> SlotState:
    """The slots a decision is scored on: K draws under the error model, or the estimate itself
    (B = 1) when the model is error-free."""
    return est if error_free(sc) else sample_realisations(sc, est, samples, rng)


@dataclass(frozen=True)
class DrawTable:
    """Every option of one slot under each of its K draws, indexed by action code: all that
    scoring a decision on those draws needs. Built once per slot (`draw_table`), it makes a
    candidate cost one gather and one admission instead of a whole `slot_outcome`."""

    b: np.ndarray  # (K, N, A) minimum bandwidth share of each action (0 for local)
    c: np.ndarray  # (K, N, A) minimum compute share
    value: np.ndarray  # (K, N, A) reward when served: the accuracy; action 0: the local reward
    task: np.ndarray  # (K, N) bool
    server: np.ndarray  # (A,) the server of each action, -1 for local
    num_servers: int
    penalty: float


def draw_table(sc: ScenarioConfig, pts: PointTable, draws: SlotState) -> DrawTable:
    """The `DrawTable` of ``draws`` (B = K), from the system model's own `option_grid`."""
    b, c, accuracy = option_grid(sc, pts, draws)  # (K, N, M, V)
    _, local_value = local_outcome(sc, pts, draws)
    k, n = local_value.shape

    def by_action(grid: np.ndarray, local: np.ndarray) -> np.ndarray:  # (K, N, M, V) -> (K, N, 1 + M V)
        return np.concatenate([local[:, :, None], grid.reshape(k, n, -1)], axis=2)

    server = np.concatenate([[-1], np.repeat(np.arange(sc.num_servers), pts.num)])
    return DrawTable(b=by_action(b, np.zeros((k, n))), c=by_action(c, np.zeros((k, n))),
                     value=by_action(accuracy, local_value), task=draws.task, server=server,
                     num_servers=sc.num_servers, penalty=sc.penalty)


def expected_rewards(table: DrawTable, candidates: np.ndarray) -> np.ndarray:
    """Mean slot reward of each candidate decision (C, N) over the table's K draws: (C,).
    The same reward as `slot_outcome` gives: the same admission greedy on the same minimum
    shares, an admitted task being on time by construction of its shares and one that is not
    being late (tests/test_system_model.py)."""
    return _mean_rewards(table.b, table.c, table.value, table.task, table.server, float(table.penalty),
                         table.num_servers, np.ascontiguousarray(candidates, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _mean_rewards(b: np.ndarray, c: np.ndarray, value: np.ndarray, task: np.ndarray, server: np.ndarray,
                  penalty: float, num_servers: int, candidates: np.ndarray) -> np.ndarray:
    """`expected_rewards` compiled: a critic scores some hundred (candidate, draw) slots per decision."""
    count, n = candidates.shape
    k = b.shape[0]
    out = np.zeros(count)
    need, b_row, c_row = np.empty(n), np.empty(n), np.empty(n)
    srv, order = np.zeros(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    used, admitted = np.empty((2, num_servers)), np.empty(n, dtype=np.bool_)
    for i in range(count):
        for d in range(k):
            _fill(need, b_row, c_row, srv, b, c, task, server, d, candidates[i], 0, n)
            stable_order(need, order)
            out[i] += _slot_total(need, b_row, c_row, srv, order, used, admitted, value, task, penalty, d, candidates[i])
    return out / k


# A (decision, draw) slot's admission inputs: each task's need (inf when not offloaded), its
# bandwidth and compute shares and its server, as separate 1-D arrays (compiled code passes
# plain arrays cheaply; a container of them costs reference counting on every access).

@numba.njit(cache=True, nogil=True)
def _fill(need: np.ndarray, b_row: np.ndarray, c_row: np.ndarray, srv: np.ndarray, b: np.ndarray, c: np.ndarray,
          task: np.ndarray, server: np.ndarray, d: int, decision: np.ndarray, lo: int, hi: int) -> None:
    """The admission inputs of tasks lo..hi-1 under draw d when they take ``decision``'s actions
    (one call per slot or per moved task: a call per task would cost more than its work)."""
    for j in range(lo, hi):
        a = decision[j]
        need[j] = b[d, j, a] + c[d, j, a] if a > 0 and task[d, j] else np.inf
        b_row[j], c_row[j], srv[j] = b[d, j, a], c[d, j, a], max(server[a], 0)


@numba.njit(cache=True, nogil=True)
def _slot_total(need: np.ndarray, b_row: np.ndarray, c_row: np.ndarray, srv: np.ndarray, order: np.ndarray,
                used: np.ndarray, admitted: np.ndarray, value: np.ndarray, task: np.ndarray, penalty: float, d: int,
                decision: np.ndarray) -> float:
    """Summed reward of ``decision`` under draw d, its tasks admitted in ``order`` (by need);
    ``used`` (2, M) and ``admitted`` (N,) are the admission's scratch."""
    used[:], admitted[:] = 0.0, False
    admit_sorted(order, need, b_row, c_row, srv, used[0], used[1], admitted)
    total = 0.0
    for j in range(decision.size):
        a = decision[j]
        if a > 0 and task[d, j]:
            total += value[d, j, a] if admitted[j] else -penalty
        else:
            total += value[d, j, 0]
    return total


@numba.njit(cache=True, nogil=True)
def _reinsert(order: np.ndarray, need: np.ndarray, j: int, out: np.ndarray) -> None:
    """``out`` := the stable order by need after only task j's need changed: ``order`` (the order
    before) with j moved to its new place, in O(N) instead of a new sort."""
    w, placed = 0, False
    for t in order:
        if t == j:
            continue
        if not placed and (need[j] < need[t] or (need[j] == need[t] and j < t)):
            out[w], w, placed = j, w + 1, True
        out[w], w = t, w + 1
    if not placed:
        out[w] = j


def hill_climb(table: DrawTable, choice: np.ndarray, value: float, changes: tuple[np.ndarray, np.ndarray],
               rounds: int) -> tuple[np.ndarray, int]:
    """Up to ``rounds`` best single-device changes among ``changes`` (device, action) while the mean
    reward over the table's draws rises by more than `IMPROVEMENT`; ``value`` is that of ``choice``.
    Returns the decision and how many changes were made (the critic's polish, the robust planner's search)."""
    device, action = changes
    choice, moved = _hill_climb(table.b, table.c, table.value, table.task, table.server, float(table.penalty),
                                table.num_servers, np.asarray(choice, dtype=np.int64), float(value),
                                np.asarray(device, dtype=np.int64), np.asarray(action, dtype=np.int64), rounds)
    return choice, int(moved)


@numba.njit(cache=True, nogil=True)
def _hill_climb(b: np.ndarray, c: np.ndarray, value_table: np.ndarray, task: np.ndarray, server: np.ndarray,
                penalty: float, num_servers: int, choice: np.ndarray, value: float, device: np.ndarray,
                action: np.ndarray, rounds: int) -> tuple[np.ndarray, int]:
    """`hill_climb` compiled. A round scores every change that differs from the current decision
    on every draw; a change moves one task, so under each draw the decision's sort order is
    computed once and each change only moves its task within it (`_reinsert`). A change to a
    device past the table's N leaves the decision's reward as it is."""
    n, k = b.shape[1], b.shape[0]
    choice = choice.copy()
    need, b_row, c_row = np.empty(n), np.empty(n), np.empty(n)
    srv, order, moved_order = np.zeros(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    used, admitted = np.empty((2, num_servers)), np.empty(n, dtype=np.bool_)
    for moved in range(rounds):
        differ = np.flatnonzero(choice[device] != action)
        if differ.size == 0:
            return choice, moved
        current = choice[:n].copy()
        scores = np.zeros(differ.size)
        for d in range(k):
            _fill(need, b_row, c_row, srv, b, c, task, server, d, current, 0, n)
            stable_order(need, order)
            for i in range(differ.size):
                j, a = device[differ[i]], action[differ[i]]
                if j >= n:
                    scores[i] += _slot_total(need, b_row, c_row, srv, order, used, admitted, value_table, task,
                                             penalty, d, current)
                    continue
                before = current[j]
                current[j] = a
                _fill(need, b_row, c_row, srv, b, c, task, server, d, current, j, j + 1)
                _reinsert(order, need, j, moved_order)
                scores[i] += _slot_total(need, b_row, c_row, srv, moved_order, used, admitted, value_table, task,
                                         penalty, d, current)
                current[j] = before
                _fill(need, b_row, c_row, srv, b, c, task, server, d, current, j, j + 1)
        scores /= k
        best = np.argmax(scores)
        if scores[best] <= value + IMPROVEMENT:
            return choice, moved
        choice[device[differ[best]]] = action[differ[best]]
        value = scores[best]
    return choice, rounds


def critic_from_meta(data: Mapping[str, Any] | None) -> CriticConfig:
    """The critic recorded in an exported policy's ``policy.json``; without one, the argmax alone."""
    return CriticConfig.model_validate(data) if data else ACTOR_ONLY


class CandidateCritic:
    """Picks the candidate with the highest expected slot reward (see the module docstring)."""

    def __init__(self, critic: CriticConfig, seed: int = 0) -> None:
        self.critic = critic
        self.rng = np.random.default_rng(seed)
        self.stats = {"slots": 0, "kept_argmax": 0, "polish_moves": 0}

    def choose(self, logits: np.ndarray, mask: np.ndarray, sc: ScenarioConfig, pts: PointTable,
               est: SlotState) -> np.ndarray:
        """The best candidate (N_max,) for per-device logits (N_max, A) under the action mask."""
        cr = self.critic
        cands = order_preserving(logits, mask, max(cr.order_preserving, 1))
        if cr.to_local:
            cands = np.concatenate([cands, to_local(logits, mask, cr.to_local)])
        if cr.sampled:
            cands = np.concatenate([cands, sampled(logits, mask, cr.sampled, self.rng)])
        if cands.shape[0] == 1 and not cr.polish:
            return cands[0]
        table = draw_table(sc, pts, realisations(sc, est, cr.samples, self.rng))
        scores = expected_rewards(table, cands[:, : sc.num_devices])
        best = int(np.argmax(scores))  # ties keep the earliest: the argmax first
        choice, value = cands[best], float(scores[best])
        self.stats["slots"] += 1
        self.stats["kept_argmax"] += int(np.array_equal(choice, cands[0]))
        if cr.polish:
            changes = single_changes(logits, mask, cr.polish_choices, least_confident(logits, mask, cr.polish_devices))
            choice, moved = hill_climb(table, choice, value, changes, cr.polish)
            self.stats["polish_moves"] += moved
        return choice

    def summary(self) -> dict[str, float]:
        slots = max(self.stats["slots"], 1)
        return {"critic_kept_argmax": self.stats["kept_argmax"] / slots,
                "critic_polish_moves": self.stats["polish_moves"] / slots}
