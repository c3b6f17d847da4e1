"""Means and 95 % confidence intervals over seeds (Student t), and paired differences.

Every row of an ablation runs the same seeds, so a row is compared with the paper's
mechanism seed by seed: the interval of the mean paired difference is narrower than that
of two independent means when seeds move both rows alike (e.g. through the channel ranking)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci95: float  # half-width; NaN with fewer than 2 values

    @property
    def significant(self) -> bool:
        """The interval excludes zero (for a difference: the sign is known at 95 %)."""
        return bool(abs(self.mean) > self.ci95)


def estimate(values: np.ndarray | list[float]) -> Estimate:
    """Mean and t-based CI95 half-width of independent values (one per seed)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return Estimate(float(x.mean()), float("nan"))
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return Estimate(float(x.mean()), float(half))


def paired_difference(row: np.ndarray | list[float], reference: np.ndarray | list[float]) -> Estimate:
    """row - reference, seed by seed (values in the same seed order)."""
    return estimate(np.asarray(row, dtype=np.float64) - np.asarray(reference, dtype=np.float64))
