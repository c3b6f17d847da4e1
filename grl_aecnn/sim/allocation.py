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

import numpy as np

EPS = 1e-9


def min_shares(x: np.ndarray, y: np.ndarray, slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum (bandwidth, compute) share pair meeting the deadline; inf where impossible."""
    rx, ry = np.sqrt(x), np.sqrt(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(slack > 0, (rx + ry) / slack, np.inf)
    b = np.where(rx > 0, rx * scale, 0.0)
    c = np.where(ry > 0, ry * scale, 0.0)
    bad = ~np.isfinite(scale)
    return np.where(bad, np.inf, b), np.where(bad, np.inf, c)


def allocate(server: np.ndarray, x: np.ndarray, y: np.ndarray, slack: np.ndarray,
             num_servers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Admit and share resources for a batch of slots.

    server: (B, N) int, the ES of each task, -1 when not offloaded; x, y, slack: (B, N).
    Returns admitted (B, N) bool and the final shares b, c (B, N) (0 where not admitted).
    """
    bsz, n = server.shape
    offloaded = server >= 0
    b_need, c_need = min_shares(x, y, slack)
    need = np.where(offloaded, b_need + c_need, np.inf)
    srv = np.where(offloaded, server, 0)
    flat = np.arange(bsz)[:, None] * num_servers + srv  # (B, N) index into (B*M)
    order = np.argsort(need, axis=1, kind="stable")
    if bsz == 1:
        admitted, used_b, used_c = _admit_one(order[0], need[0], b_need[0], c_need[0], srv[0], num_servers)
    else:
        admitted, used_b, used_c = _admit_batch(order, need, b_need, c_need, flat, num_servers)
    tot_b, tot_c = used_b[flat], used_c[flat]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(admitted, np.where(tot_b > 0, b_need / tot_b, 0.0), 0.0)
        c = np.where(admitted, np.where(tot_c > 0, c_need / tot_c, 0.0), 0.0)
    return admitted, b, c


def _admit_batch(order: np.ndarray, need: np.ndarray, b_need: np.ndarray, c_need: np.ndarray,
                 flat: np.ndarray, num_servers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy admission for B copies at once: one vectorised step per rank position."""
    bsz, n = need.shape
    s_need = np.take_along_axis(need, order, axis=1)
    s_flat = np.take_along_axis(flat, order, axis=1)
    s_b = np.take_along_axis(b_need, order, axis=1)
    s_c = np.take_along_axis(c_need, order, axis=1)
    used_b = np.zeros(bsz * num_servers)
    used_c = np.zeros(bsz * num_servers)
    s_adm = np.zeros((bsz, n), dtype=bool)
    for k in range(int(np.isfinite(s_need).sum(axis=1).max(initial=0))):
        idx, bk, ck = s_flat[:, k], s_b[:, k], s_c[:, k]
        fits = np.isfinite(s_need[:, k]) & (used_b[idx] + bk <= 1.0 + EPS) & (used_c[idx] + ck <= 1.0 + EPS)
        used_b[idx] += np.where(fits, bk, 0.0)
        used_c[idx] += np.where(fits, ck, 0.0)
        s_adm[:, k] = fits
    admitted = np.zeros((bsz, n), dtype=bool)
    np.put_along_axis(admitted, order, s_adm, axis=1)
    return admitted, used_b, used_c


def _admit_one(order: np.ndarray, need: np.ndarray, b_need: np.ndarray, c_need: np.ndarray,
               srv: np.ndarray, num_servers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same greedy for a single copy in plain Python (NumPy call overhead dominates there)."""
    used_b, used_c = [0.0] * num_servers, [0.0] * num_servers
    admitted = np.zeros((1, need.size), dtype=bool)
    need_l, b_l, c_l, srv_l = need.tolist(), b_need.tolist(), c_need.tolist(), srv.tolist()
    for j in order.tolist():
        if need_l[j] == np.inf:
            break  # sorted: the rest are not offloaded or cannot make their deadline
        m = srv_l[j]
        if used_b[m] + b_l[j] <= 1.0 + EPS and used_c[m] + c_l[j] <= 1.0 + EPS:
            used_b[m] += b_l[j]
            used_c[m] += c_l[j]
            admitted[0, j] = True
    return admitted, np.array(used_b), np.array(used_c)
