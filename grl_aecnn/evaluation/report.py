"""report.md: the default-scenario table, calibration margins, operating-point mix, plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from grl_aecnn.evaluation.plots import LABELS

if TYPE_CHECKING:
    from grl_aecnn.evaluation.harness import PolicyRun

FIXED_RULES = ("all-local", "all-edge")


def calibration(rows: list[dict[str, Any]], default_runs: list["PolicyRun"]) -> dict[str, Any]:
    """Does the default scenario make decisions matter? Oracle margin over every fixed rule
    (relative reward gap) and how varied the oracle's operating points are."""
    base = {r["policy"]: r for r in rows if r["axis"] == "default"}
    out: dict[str, Any] = {}
    if "oracle" not in base:
        return out
    ref = base["oracle"]["reward"]
    fixed = {n: r for n, r in base.items() if n in FIXED_RULES or n.startswith("fixed:")}
    margins = {n: (ref - r["reward"]) / abs(ref) for n, r in fixed.items()}
    if margins:
        best = min(margins, key=margins.get)
        out.update({"best_fixed_rule": best, "oracle_margin_over_best_fixed": margins[best],
                    "oracle_margins": margins})
    oracle = next((r for r in default_runs if r.policy == "oracle"), None)
    if oracle is not None:
        total = sum(oracle.point_counts.values()) or 1
        mix = dict(sorted(((k, v / total) for k, v in oracle.point_counts.items()), key=lambda kv: -kv[1]))
        slots = oracle.distinct_points_per_slot
        out.update({"oracle_point_mix": mix, "oracle_largest_point_share": max(mix.values(), default=0.0),
                    "oracle_slots_with_several_points": sum(d > 1 for d in slots) / max(len(slots), 1),
                    **oracle.extra})
    return out


def write_report(path: Path, rows: list[dict[str, Any]], pngs: list[Path], calib: dict[str, Any],
                 default_runs: list["PolicyRun"]) -> None:
    default = sorted((r for r in rows if r["axis"] == "default"), key=lambda r: -r["reward"])
    # References beyond the oracle: the oracle on the learned policies' own action set, and the
    # planner (the oracle's solver on the estimates, what imperfect knowledge leaves).
    refs = [r for r in default if r["policy"].startswith("oracle:") or r["policy"] == "planner"]
    lines = ["# Evaluation", "", "Default scenario; mean +- 95 % CI over seeded episodes (the same for every "
             "policy); `reward / X` is the ratio of mean rewards to policy X: `oracle` has perfect knowledge "
             "of the realised channel and capacity, `oracle:<codecs>` is the same on the learned policies' "
             "action set, `planner` is the oracle's solver run on the estimates.", ""]
    head = "| policy | " + " | ".join(LABELS[m] for m in LABELS) + " | reward / oracle |" + \
        "".join(f" reward / {ref['policy']} |" for ref in refs)
    lines += [head, "|" + " --- |" * (len(LABELS) + 2 + len(refs))]
    for r in default:
        cells = [f"{r[m]:.3f} +- {r[f'{m}_ci95']:.3f}" for m in LABELS]
        ratios = "".join(f" {r['reward'] / ref['reward']:.3f} |" for ref in refs)
        lines.append(f"| {r['policy']} | " + " | ".join(cells) + f" | {r['reward_vs_oracle']:.3f} |" + ratios)
    if calib:
        lines += ["", "## Calibration (do decisions matter?)", ""]
        if "best_fixed_rule" in calib:
            lines.append(f"- Oracle reward margin over the best fixed rule ({calib['best_fixed_rule']}): "
                         f"{100 * calib['oracle_margin_over_best_fixed']:.1f} %")
        if "oracle_point_mix" in calib:
            mix = ", ".join(f"{k} {100 * v:.0f} %" for k, v in calib["oracle_point_mix"].items())
            lines.append(f"- Oracle's choices per task: {mix}")
            lines.append(f"- Slots where the oracle uses more than one choice: "
                         f"{100 * calib['oracle_slots_with_several_points']:.0f} %")
        if "oracle_mean_gap" in calib:
            lines.append(f"- Oracle solver: exact on {100 * calib['oracle_exact_fraction']:.0f} % of slots, mean "
                         f"gap to its bound {100 * calib['oracle_mean_gap']:.2f} %, largest "
                         f"{100 * calib['oracle_max_gap']:.2f} %, {calib['oracle_ms_per_slot']:.1f} ms/slot")
    lines += ["", "## Sweeps", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    lines += ["", "Full results (every scenario and policy): `results.csv`.", ""]
    path.write_text("\n".join(lines))
