"""Summary statistics shared by the codec profile and the evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (half-width 0 for a single value)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def paired_ci95(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``ci95`` of the differences a - b, pair by pair: for two policies on the same seeded
    episodes, whose shared draws would otherwise swamp the interval."""
    return ci95(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
