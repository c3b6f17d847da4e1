"""One PNG per sweep axis: the four metrics against the axis value, a line per policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"accuracy": "average inference accuracy", "success_rate": "service success rate",
          "throughput": "throughput (tasks/s)", "reward": "reward per slot"}


def plotted_policies(rows: list[dict[str, Any]]) -> list[str]:
    """Every policy except fixed points, plus the best fixed point on the default scenario."""
    names = list(dict.fromkeys(r["policy"] for r in rows))
    fixed = [r for r in rows if r["axis"] == "default" and r["policy"].startswith("fixed:")]
    keep = [n for n in names if not n.startswith("fixed:")]
    if fixed:
        keep.append(max(fixed, key=lambda r: r["reward"])["policy"])
    return keep


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def plot_axes(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    paths = []
    policies = plotted_policies(rows)
    for axis in dict.fromkeys(r["axis"] for r in rows if r["axis"] != "default"):
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
        values = list(dict.fromkeys(r["value"] for r in rows if r["axis"] == axis))
        numeric = all(_is_number(v) for v in values)
        for ax, metric in zip(axes.ravel(), LABELS):
            for name in policies:
                pts = sorted((float(r["value"]) if numeric else values.index(r["value"]), r[metric],
                              r[f"{metric}_ci95"]) for r in rows if r["axis"] == axis and r["policy"] == name)
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, marker="o", capsize=2, label=name)
            if not numeric:  # categorical axis such as network sizes "6x1"
                ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlabel(axis)
            ax.set_ylabel(LABELS[metric])
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        path = out_dir / f"sweep_{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
