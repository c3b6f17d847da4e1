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
from grl_aecnn.sim.allocation import admit_row
from grl_aecnn.sim.core import SlotState, error_free, local_outcome, option_grid, sample_realisations
from grl_aecnn.sim.points import PointTable
from grl_aecnn.sim.settings import ScenarioConfig

IMPROVEMENT = 1e-9  # a change must raise the sampled mean by more than this (`hill_climb`)


def order_preserving(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Up to k order-preserving candidates (k', N_max) from per-device logits (N_max, A)."""
    order = np.argsort(-np.where(mask > 0, logits, -np.inf), axis=1)
    first, second = order[:, 0], order[:, 1]
    ranked = least_confident(logits, mask, k - 1)
    flipped = np.arange(1 + ranked.size)[:, None] > np.arange(ranked.size)[None, :]  # row i: the first i
    cands = np.repeat(first[None, :], 1 + ranked.size, axis=0)
    cands[:, ranked] = np.where(flipped, second[ranked], first[ranked])
    return cands.astype(np.int64)


def to_local(logits: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Up to k candidates (k', N_max) that cut the actor's offloads back: the argmax with the
    1, 2, ... offloading devices whose best offload beats local by the least run locally instead.
    Order-preserving flips reach only each device's second choice, which under congestion is
    usually another offload; these reach the decisions that relieve a crowded band or server."""
    scores = np.where(mask > 0, logits, -np.inf)
    first = scores.argmax(axis=1)
    offloading = np.flatnonzero(first > 0)
    margin = scores[offloading, first[offloading]] - scores[offloading, 0]
    ranked = offloading[np.argsort(margin, kind="stable")][:k]
    kept = np.arange(1, 1 + ranked.size)[:, None] <= np.arange(ranked.size)[None, :]  # row i: first i+1 local
    cands = np.repeat(first[None, :], ranked.size, axis=0)
    cands[:, ranked] = np.where(kept, first[ranked], 0)
    return cands.astype(np.int64)


def least_confident(logits: np.ndarray, mask: np.ndarray, most: int) -> np.ndarray:
    """The (at most ``most``) devices with a choice whose two best actions are closest in logit."""
    scores = np.where(mask > 0, logits, -np.inf)
    top = -np.sort(-scores, axis=1)[:, :2]
    choice = np.isfinite(top[:, 1])
    margin = np.where(choice, top[:, 0] - top[:, 1], np.inf)
    return np.argsort(margin, kind="stable")[: min(most, int(choice.sum()))]


def single_changes(logits: np.ndarray, mask: np.ndarray, choices: int,
                   devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(device, action) pairs a polish step may try: every device with a choice to local, and
    each of ``devices`` to one of its ``choices`` best-scored offloads. The actor prunes the
    search: of the 1 + M V actions of a device only these few are ever scored, and other
    offloads only for the devices it is least sure of. Local stays open to all, since in a
    crowded slot the actor can be sure of an offload that no longer fits."""
    allowed_actions = mask > 0
    deciding = np.flatnonzero(allowed_actions[:, 0] & (allowed_actions.sum(axis=1) > 1))
    scores = np.where(allowed_actions, logits, -np.inf)[devices]
    scores[:, 0] = -np.inf
    order = np.argsort(-scores, axis=1)[:, :choices]
    allowed = np.isfinite(np.take_along_axis(scores, order, axis=1))
    device = np.concatenate([deciding, np.repeat(devices, allowed.sum(axis=1))])
    action = np.concatenate([np.zeros(deciding.size, dtype=np.int64), order[allowed]])
    return device, action.astype(np.int64)


def sampled(logits: np.ndarray, mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` decisions (count, N_max) drawn from the per-device softmax over allowed actions."""
    z = np.where(mask > 0, logits, -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((count, logits.shape[0], 1))
    return np.minimum((u > cdf[None]).sum(axis=2), logits.shape[1] - 1).astype(np.int64)


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
    srv = np.zeros(n, dtype=np.int64)
    used_b, used_c = np.empty(num_servers), np.empty(num_servers)
    admitted = np.empty(n, dtype=np.bool_)
    for i in range(count):
        total = 0.0
        for d in range(k):
            for j in range(n):
                a = candidates[i, j]
                off = a > 0 and task[d, j]
                need[j] = b[d, j, a] + c[d, j, a] if off else np.inf
                b_row[j], c_row[j], srv[j] = b[d, j, a], c[d, j, a], max(server[a], 0)
            used_b[:], used_c[:], admitted[:] = 0.0, 0.0, False
            admit_row(need, b_row, c_row, srv, used_b, used_c, admitted)
            for j in range(n):
                a = candidates[i, j]
                if a > 0 and task[d, j]:
                    total += value[d, j, a] if admitted[j] else -penalty
                else:
                    total += value[d, j, 0]
        out[i] = total / k
    return out


def hill_climb(table: DrawTable, choice: np.ndarray, value: float, changes: tuple[np.ndarray, np.ndarray],
               rounds: int) -> tuple[np.ndarray, int]:
    """Up to ``rounds`` best single-device changes among ``changes`` (device, action) while the mean
    reward over the table's draws rises by more than `IMPROVEMENT`; ``value`` is that of ``choice``.
    Returns the decision and how many changes were made (the critic's polish, the robust planner's search)."""
    device, action = changes
    n = table.b.shape[1]
    for moved in range(rounds):
        differ = choice[device] != action
        if not differ.any():
            return choice, moved
        dev, act = device[differ], action[differ]
        cands = np.repeat(choice[None], dev.size, axis=0)
        cands[np.arange(dev.size), dev] = act
        scores = expected_rewards(table, cands[:, :n])
        best = int(np.argmax(scores))
        if scores[best] <= value + IMPROVEMENT:
            return choice, moved
        choice, value = cands[best], float(scores[best])
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
