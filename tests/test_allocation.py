"""Resource allocation against brute force on small cases."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from grl_aecnn.sim.allocation import allocate, min_shares, stable_order


def brute_force_count(b: np.ndarray, c: np.ndarray) -> int:
    """Largest set of tasks whose minimum share pairs fit one server."""
    n = b.size
    for size in range(n, 0, -1):
        for subset in combinations(range(n), size):
            idx = list(subset)
            if b[idx].sum() <= 1 + 1e-9 and c[idx].sum() <= 1 + 1e-9:
                return size
    return 0


def random_cases(rng: np.random.Generator, batch: int, n: int, compute: bool) -> tuple[np.ndarray, ...]:
    x = rng.uniform(0.001, 0.03, (batch, n))
    y = rng.uniform(0.001, 0.03, (batch, n)) if compute else np.zeros((batch, n))
    slack = rng.uniform(0.01, 0.1, (batch, n))
    return x, y, slack


def test_min_shares_meet_the_deadline_exactly() -> None:
    x, y, s = np.array([0.01, 0.02]), np.array([0.03, 0.0]), np.array([0.1, 0.05])
    b, c = min_shares(x, y, s)
    assert np.allclose(x / b + np.where(y > 0, y / np.where(c > 0, c, 1), 0), s)
    # b + c is minimal on the deadline curve: compare with a grid of splits.
    split = np.linspace(0.01, 0.99, 999)
    grid = x[0] / (split * s[0]) + y[0] / ((1 - split) * s[0])
    assert b[0] + c[0] <= grid.min() + 1e-9
    assert np.isinf(min_shares(np.array([0.01]), np.array([0.01]), np.array([-0.1]))[0]).all()


def test_min_shares_at_the_edges_follow_the_closed_form() -> None:
    """Zero, tiny, huge, infinite and NaN needs and slacks, against the closed form written with
    NumPy: 0 for an unused resource, inf whenever the deadline cannot be met, never NaN."""
    rng = np.random.default_rng(3)
    vals = np.array([0.0, 1e-300, 1e-12, 0.5, 3.0, 1e300, np.inf, np.nan])
    x, y = rng.choice(vals, (4000,)), rng.choice(vals, (4000,))
    slack = rng.choice(np.array([-1.0, 0.0, 1e-300, 1e-6, 0.05, 1.0, np.inf, np.nan]), (4000,))
    with np.errstate(all="ignore"):
        scale = np.where(slack > 0, (np.sqrt(x) + np.sqrt(y)) / slack, np.inf)
        bad = ~np.isfinite(scale)
        want_b = np.where(bad, np.inf, np.where(np.sqrt(x) > 0, np.sqrt(x) * scale, 0.0))
        want_c = np.where(bad, np.inf, np.where(np.sqrt(y) > 0, np.sqrt(y) * scale, 0.0))
        b, c = min_shares(x, y, slack)
    np.testing.assert_array_equal(b, want_b)
    np.testing.assert_array_equal(c, want_c)
    assert not np.isnan(b).any() and not np.isnan(c).any()


def test_stable_order_is_the_stable_argsort() -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 32):
        for _ in range(50):
            values = rng.choice(np.array([0.1, 0.2, 0.2, 0.5, np.inf]), n) * rng.integers(1, 3, n)
            order = np.empty(n, dtype=np.int64)
            stable_order(values, order)
            np.testing.assert_array_equal(order, np.argsort(values, kind="stable"))


def test_greedy_equals_brute_force_when_one_resource_binds() -> None:
    rng = np.random.default_rng(0)
    x, y, slack = random_cases(rng, 200, 7, compute=False)
    admitted, _, _ = allocate(np.zeros((200, 7), int), x, y, slack, 1)
    b, c = min_shares(x, y, slack)
    for i in range(200):
        assert admitted[i].sum() == brute_force_count(b[i], c[i])


def test_greedy_close_to_brute_force_with_two_resources() -> None:
    rng = np.random.default_rng(1)
    cases = 300
    x, y, slack = random_cases(rng, cases, 7, compute=True)
    admitted, _, _ = allocate(np.zeros((cases, 7), int), x, y, slack, 1)
    b, c = min_shares(x, y, slack)
    best = np.array([brute_force_count(b[i], c[i]) for i in range(cases)])
    got = admitted.sum(axis=1)
    assert (got <= best).all() and (got >= best - 1).all()
    assert (got == best).mean() >= 0.9


@pytest.mark.parametrize("servers", [1, 2, 3])
def test_admitted_tasks_are_on_time_and_shares_fit(servers: int) -> None:
    rng = np.random.default_rng(servers)
    x, y, slack = random_cases(rng, 100, 8, compute=True)
    server = rng.integers(-1, servers, (100, 8))
    admitted, b, c = allocate(server, x, y, slack, servers)
    assert not admitted[server < 0].any()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(admitted, x / b + y / c, 0.0)
    assert (t <= slack + 1e-9)[admitted].all()
    for m in range(servers):
        on = admitted & (server == m)
        assert (np.where(on, b, 0).sum(axis=1) <= 1 + 1e-9).all()
        assert (np.where(on, c, 0).sum(axis=1) <= 1 + 1e-9).all()


def test_all_fit_means_all_admitted() -> None:
    x = np.full((1, 4), 0.001)
    admitted, b, _ = allocate(np.array([[0, 0, 1, -1]]), x, x, np.full((1, 4), 0.1), 2)
    assert admitted.tolist() == [[True, True, True, False]]
    assert b[0, :2].sum() == pytest.approx(1.0) and b[0, 2] == pytest.approx(1.0)


def test_single_copy_path_matches_batch_path() -> None:
    rng = np.random.default_rng(4)
    x, y, slack = random_cases(rng, 50, 8, compute=True)
    server = rng.integers(-1, 2, (50, 8))
    batch = allocate(server, x, y, slack, 2)
    for i in range(50):
        one = allocate(server[i:i + 1], x[i:i + 1], y[i:i + 1], slack[i:i + 1], 2)
        for a, b in zip(one, batch):
            assert np.array_equal(a[0], b[i])
