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
from typing import Any

import numpy as np

from grl_aecnn.policies.settings import ACTOR_ONLY, CriticConfig
from grl_aecnn.sim.core import SlotState, error_free, sample_realisations, slot_outcome
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
    """(device, action) pairs a polish step may try: each of ``devices`` to local or to one of
    its ``choices`` best-scored offloads. The actor prunes the search: of the 1 + M V actions
    of a device only these few are ever scored, and only for the devices it is least sure of."""
    scores = np.where(mask > 0, logits, -np.inf)[devices]
    scores[:, 0] = -np.inf  # local is always a change to try
    order = np.argsort(-scores, axis=1)[:, :choices]
    allowed = np.isfinite(np.take_along_axis(scores, order, axis=1))
    deciding = devices[allowed[:, 0]]
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


def expected_rewards(sc: ScenarioConfig, pts: PointTable, candidates: np.ndarray, draws: SlotState) -> np.ndarray:
    """Mean slot reward of each candidate decision (C, N) over the draws (B = K): (C,)."""
    c, k = candidates.shape[0], draws.task.shape[0]
    acts = np.repeat(candidates, k, axis=0)
    out = slot_outcome(sc, pts, draws.repeat_batch(c), acts)
    return out.reward.sum(axis=1).reshape(c, k).mean(axis=1)


def hill_climb(sc: ScenarioConfig, pts: PointTable, choice: np.ndarray, value: float,
               changes: tuple[np.ndarray, np.ndarray], draws: SlotState, rounds: int) -> tuple[np.ndarray, int]:
    """Up to ``rounds`` best single-device changes among ``changes`` (device, action) while the mean
    reward over ``draws`` rises by more than `IMPROVEMENT`; ``value`` is that of ``choice``.
    Returns the decision and how many changes were made (the critic's polish, the robust planner's search)."""
    device, action = changes
    for moved in range(rounds):
        differ = choice[device] != action
        if not differ.any():
            return choice, moved
        dev, act = device[differ], action[differ]
        cands = np.repeat(choice[None], dev.size, axis=0)
        cands[np.arange(dev.size), dev] = act
        scores = expected_rewards(sc, pts, cands[:, : sc.num_devices], draws)
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
        n = sc.num_devices
        draws = realisations(sc, est, cr.samples, self.rng)
        scores = expected_rewards(sc, pts, cands[:, :n], draws)
        best = int(np.argmax(scores))  # ties keep the earliest: the argmax first
        choice, value = cands[best], float(scores[best])
        self.stats["slots"] += 1
        self.stats["kept_argmax"] += int(np.array_equal(choice, cands[0]))
        if cr.polish:
            changes = single_changes(logits, mask, cr.polish_choices, least_confident(logits, mask, cr.polish_devices))
            choice, moved = hill_climb(sc, pts, choice, value, changes, draws, cr.polish)
            self.stats["polish_moves"] += moved
        return choice

    def summary(self) -> dict[str, float]:
        slots = max(self.stats["slots"], 1)
        return {"critic_kept_argmax": self.stats["kept_argmax"] / slots,
                "critic_polish_moves": self.stats["polish_moves"] / slots}
