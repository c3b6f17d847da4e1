"""Resource allocation at the edge servers for a given offloading decision.

Task i offloaded to server m needs `x_i` seconds of transmission if it had the whole band and
`y_i` seconds of computing if it had the whole server, with `s_i` seconds left after its
on-device part. With shares b_i (bandwidth) and c_i (compute) it is on time iff
x_i / b_i + y_i / c_i <= s_i.

Algorithm (documented in docs/system-model.md, section "Resource allocation"):
1. Each task's minimum share pair is the point of its deadline curve with the smallest
   b + c: b_i = sqrt(x_i) (sqrt(x_i) + sqrt(y_i)) / s_i, c_i = sqrt(y_i) (sqrt(x_i) + sqrt(y_i)) / s_i.
2. Admission: per server, tasks in increasing order of need b_i + c_i = (sqrt x_i + sqrt y_i)^2 / s_i
   are admitted while both sums stay <= 1; a task that does not fit is skipped (dropped, so it
   fails) and later, smaller-in-one-resource tasks may still fit.
3. The admitted tasks share what is left in proportion to their pairs (b_i / sum b), which
   keeps every admitted task on time and shortens its latency.
Step 2 is a greedy for a 2-resource knapsack: it is exact whenever one resource binds (then it
is smallest-first, which maximises the count) and close otherwise (see tests/test_allocation.py).
Whenever all offloaded tasks of a server fit together, all are admitted - the property the
oracle relies on.
"""

from __future__ import annotations

import numba
import numpy as np

EPS = 1e-9


def min_shares(x: np.ndarray, y: np.ndarray, slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum (bandwidth, compute) share pair meeting the deadline; inf where impossible."""
    with np.errstate(divide="ignore", invalid="ignore"):  # the compiled branches are evaluated eagerly
        return _share(x, y, slack), _share(y, x, slack)


@numba.vectorize(["float64(float64, float64, float64)"], cache=True, nopython=True)
def _share(own: float, other: float, slack: float) -> float:
    """One resource's share of the pair: sqrt(own) (sqrt(own) + sqrt(other)) / slack, 0 for a
    resource the task does not use, inf when the deadline cannot be met. A compiled ufunc: the
    critics evaluate it on every option under every draw at every slot, where a dozen NumPy
    passes over some thousand elements cost more than the arithmetic."""
    root = np.sqrt(own)
    scale = (root + np.sqrt(other)) / slack if slack > 0 else np.inf
    if not np.isfinite(scale):
        return np.inf
    return root * scale if root > 0 else 0.0


def allocate(server: np.ndarray, x: np.ndarray, y: np.ndarray, slack: np.ndarray,
             num_servers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Admit and share resources for a batch of slots.

    server: (B, N) int, the ES of each task, -1 when not offloaded; x, y, slack: (B, N).
    Returns admitted (B, N) bool and the final shares b, c (B, N) (0 where not admitted).
    """
    b_need, c_need = min_shares(x, y, slack)
    offloaded = server >= 0
    srv = np.where(offloaded, server, 0)
    admitted, used_b, used_c = _admit_rows(np.where(offloaded, b_need + c_need, np.inf),
                                           np.ascontiguousarray(b_need, dtype=np.float64),
                                           np.ascontiguousarray(c_need, dtype=np.float64),
                                           srv.astype(np.int64), num_servers)
    rows = np.arange(server.shape[0])[:, None]
    tot_b, tot_c = used_b[rows, srv], used_c[rows, srv]  # the admitted totals of each task's server
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(admitted, np.where(tot_b > 0, b_need / tot_b, 0.0), 0.0)
        c = np.where(admitted, np.where(tot_c > 0, c_need / tot_c, 0.0), 0.0)
    return admitted, b, c


@numba.njit(cache=True, nogil=True)
def _admit_rows(need: np.ndarray, b_need: np.ndarray, c_need: np.ndarray, srv: np.ndarray,
                num_servers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`admit_row` for every row (B copies of a slot): compiled, because the greedy is sequential
    within a row (a skipped task lets a later one in), which NumPy could vectorise only across
    rows, one step per rank position."""
    bsz, n = need.shape
    admitted = np.zeros((bsz, n), dtype=np.bool_)
    used_b = np.zeros((bsz, num_servers))
    used_c = np.zeros((bsz, num_servers))
    order = np.empty(n, dtype=np.int64)
    for r in range(bsz):
        admit_row(need[r], b_need[r], c_need[r], srv[r], used_b[r], used_c[r], admitted[r], order)
    return admitted, used_b, used_c


@numba.njit(cache=True, nogil=True)
def admit_row(need: np.ndarray, b_need: np.ndarray, c_need: np.ndarray, srv: np.ndarray,
              used_b: np.ndarray, used_c: np.ndarray, admitted: np.ndarray, order: np.ndarray) -> None:
    """The admission greedy of one slot, written into ``used_b``/``used_c`` (M,, zeroed) and
    ``admitted`` (N,, False): tasks in increasing ``need`` (ties in task order), each admitted
    if both sums of its server stay <= 1; a task with need inf is not offloaded or hopeless.
    ``order`` (N,) is scratch space for the sort. The simulator runs it through `allocate`, the
    critics, which keep a slot's order between decisions that differ in one task, call
    `admit_sorted` (`grl_aecnn.policies.candidates.expected_rewards`)."""
    stable_order(need, order)
    admit_sorted(order, need, b_need, c_need, srv, used_b, used_c, admitted)


@numba.njit(cache=True, nogil=True)
def admit_sorted(order: np.ndarray, need: np.ndarray, b_need: np.ndarray, c_need: np.ndarray, srv: np.ndarray,
                 used_b: np.ndarray, used_c: np.ndarray, admitted: np.ndarray) -> None:
    """`admit_row`'s greedy over tasks already in ``order``, the stable ascending order of ``need``."""
    for j in order:
        if need[j] == np.inf:
            break  # sorted: the rest are not offloaded or cannot make their deadline
        m = srv[j]
        if used_b[m] + b_need[j] <= 1.0 + EPS and used_c[m] + c_need[j] <= 1.0 + EPS:
            used_b[m] += b_need[j]
            used_c[m] += c_need[j]
            admitted[j] = True


@numba.njit(cache=True, nogil=True)
def stable_order(values: np.ndarray, order: np.ndarray) -> None:
    """``order`` := the stable ascending argsort of ``values``, by insertion: a slot has some 30
    tasks, and a critic sorts one slot per (candidate, draw), where allocating a merge sort's
    buffers cost more than the comparisons."""
    for i in range(values.size):
        k = i
        while k > 0 and values[order[k - 1]] > values[i]:
            order[k] = order[k - 1]
            k -= 1
        order[k] = i
