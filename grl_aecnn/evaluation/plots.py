"""Figures: one PNG per sweep axis (the four metrics against the axis value, a line per
policy), and the subject's reward ratio to each reference on every scenario row.

Every policy keeps one (colour, marker) pair across all figures and no two policies share
one, so a dozen lines stay readable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

LABELS = {"accuracy": "average inference accuracy", "success_rate": "service success rate",
          "throughput": "throughput (tasks/s)", "reward": "reward per slot"}
# Row ratio column -> the reference it divides by (report table and ratio figure).
REFERENCE_RATIOS = {"reward_vs_oracle": "oracle", "reward_vs_own_oracle": "own oracle",
                    "reward_vs_planner": "planner", "reward_vs_robust": "robust planner"}
MARKERS = "osD^v<>PX*hp"


def plotted_policies(rows: list[dict[str, Any]]) -> list[str]:
    """Every policy except fixed points, plus the best fixed point on the default scenario."""
    names = list(dict.fromkeys(r["policy"] for r in rows))
    fixed = [r for r in rows if r["axis"] == "default" and r["policy"].startswith("fixed:")]
    keep = [n for n in names if not n.startswith("fixed:")]
    if fixed:
        keep.append(max(fixed, key=lambda r: r["reward"])["policy"])
    return keep


def styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """Policy i gets colour i mod 20 (tab20) and marker i mod 11: the first 20 policies have
    distinct colours, and no two of the first 220 share both colour and marker."""
    colours = plt.get_cmap("tab20").colors
    return {name: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}
            for i, name in enumerate(names)}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def plot_axes(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    paths = []
    policies = plotted_policies(rows)
    style = styles(policies)
    for axis in dict.fromkeys(r["axis"] for r in rows if r["axis"] != "default"):
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
        values = list(dict.fromkeys(r["value"] for r in rows if r["axis"] == axis))
        numeric = all(_is_number(v) for v in values)
        for ax, metric in zip(axes.ravel(), LABELS):
            for i, name in enumerate(policies):
                # Categories (network sizes, combination names) are not a line: markers side by side.
                shift = 0.0 if numeric else 0.6 * (i / max(len(policies) - 1, 1) - 0.5)
                pts = sorted((float(r["value"]) if numeric else values.index(r["value"]) + shift, r[metric],
                              r[f"{metric}_ci95"]) for r in rows if r["axis"] == axis and r["policy"] == name)
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, capsize=2, label=name, markersize=5,
                                linestyle="-" if numeric else "none", **style[name])
            if not numeric:  # categorical axis such as network sizes "6x1" or combination names
                ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=15, fontsize=8)
            ax.set_xlabel(axis)
            ax.set_ylabel(LABELS[metric])
            ax.grid(alpha=0.3)
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right upper", fontsize=8)
        path = out_dir / f"sweep_{axis}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_ratios(rows: list[dict[str, Any]], subject: str, out_dir: Path) -> list[Path]:
    """Grouped bars: the subject's reward / each reference, per scenario row; a line at 1."""
    mine = [r for r in rows if r["policy"] == subject]
    if not mine:
        return []
    labels = ["default" if r["axis"] == "default" else f"{r['axis']}={r['value']}" for r in mine]
    refs = list(REFERENCE_RATIOS.items())
    width = 0.8 / len(refs)
    x = np.arange(len(mine))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(mine) + 3), 4.5), constrained_layout=True)
    colours = plt.get_cmap("tab10").colors
    for i, (key, name) in enumerate(refs):
        errors = [r[f"{key}_ci95"] for r in mine] if f"{key}_ci95" in mine[0] else None  # paired, per episode
        ax.bar(x + (i - (len(refs) - 1) / 2) * width, [r[key] for r in mine], width, label=f"/ {name}",
               color=colours[i], yerr=errors, capsize=2 if errors else 0)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.97, color="grey", linewidth=0.8, linestyle="--", label="0.97")
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"{subject} reward / reference")
    ax.set_title(f"{subject} against each reference, per scenario row")
    ax.legend(fontsize=8, ncols=5)
    ax.grid(axis="y", alpha=0.3)
    path = out_dir / "ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
