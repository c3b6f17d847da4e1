"""report.md: the default-scenario table, paired differences of the subject, the generalisation
table, calibration margins, operating-point mix, plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from grl_aecnn.evaluation.plots import LABELS, REFERENCE_RATIOS
from grl_aecnn.stats import paired_ci95

if TYPE_CHECKING:
    from grl_aecnn.evaluation.harness import PolicyRun

FIXED_RULES = ("all-local", "all-edge")
DROO = "droo-aecnn"  # the learned baseline every row must beat (grl_aecnn.policies.training)


def is_fixed_rule(name: str) -> bool:
    return name in FIXED_RULES or name.startswith("fixed:")


def calibration(rows: list[dict[str, Any]], default_runs: list["PolicyRun"]) -> dict[str, Any]:
    """Does the default scenario make decisions matter? Oracle margin over every fixed rule
    (relative reward gap) and how varied the oracle's operating points are."""
    base = {r["policy"]: r for r in rows if r["axis"] == "default"}
    out: dict[str, Any] = {}
    if "oracle" not in base:
        return out
    ref = base["oracle"]["reward"]
    margins = {n: (ref - r["reward"]) / abs(ref) for n, r in base.items() if is_fixed_rule(n)}
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


PAIRED = ("reward", "success_rate", "throughput")


def paired_differences(rows: list[dict[str, Any]], default_runs: list["PolicyRun"], subject: str,
                       references: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The subject minus every other learned policy and the `references` on the default scenario,
    per metric: the mean and 95 % t-interval of the per-episode differences. Every policy plays the
    same seeded episodes, so the pairs share channels, tasks and capacity; the interval of the
    difference is then far tighter than the two policies' own intervals side by side."""
    runs = {r.policy: r for r in default_runs}
    me = runs.get(subject)
    if me is None:
        return []
    learned = {r["policy"] for r in rows if r["axis"] == "default" and r["learned"]}
    out = []
    for name, run in runs.items():
        if name == subject or name.startswith(f"{subject}:") or not (name in learned or name in references):
            continue
        diffs = {}
        for m in PAIRED:
            mean, half = paired_ci95(me.episodes[m], run.episodes[m])
            diffs[m] = {"mean": mean, "ci95": half, "ahead": mean - half > 0}
        out.append({"policy": name, **diffs})
    return out


def _paired_lines(pairs: list[dict[str, Any]], subject: str) -> list[str]:
    if not pairs:
        return []
    lines = ["", f"## Paired differences ({subject}, default scenario)", "",
             f"{subject} minus each policy, mean +- 95 % CI of the per-episode differences (the same seeded "
             "episodes for both); **bold**: the interval lies above zero.", "",
             "| policy | " + " | ".join(LABELS[m] for m in PAIRED) + " |", "|" + " --- |" * (1 + len(PAIRED))]
    for pair in pairs:
        cells = [("**{:+.3f} +- {:.3f}**" if pair[m]["ahead"] else "{:+.3f} +- {:.3f}").format(
            pair[m]["mean"], pair[m]["ci95"]) for m in PAIRED]
        lines.append(f"| {pair['policy']} | " + " | ".join(cells) + " |")
    return lines


def scenario_label(row: dict[str, Any]) -> str:
    return "default" if row["axis"] == "default" else f"{row['axis']}={row['value']}"


def generalisation(rows: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    """Per scenario row: the subject's rank among the deployable policies (1 + how many did better),
    its ratio to the robust planner and to the best non-learned deployable policy, whether it
    beats every fixed rule, DROO-AECNN and every other learned policy (its own variants, such as
    its actor alone, are not others), and whether the row lies inside the
    training distribution. Rows without the subject are skipped."""
    table = []
    for label in dict.fromkeys(scenario_label(r) for r in rows):
        group = [r for r in rows if scenario_label(r) == label and r["deployable"]]
        me = next((r for r in group if r["policy"] == subject), None)
        if me is None:
            continue
        others = [r for r in group if not r["learned"]]
        best_other = max(others, key=lambda r: r["reward"]) if others else None
        fixed = [r["reward"] for r in group if is_fixed_rule(r["policy"])]
        learned = [r for r in group if r["learned"] and not r["policy"].startswith((subject, f"{subject}:"))]
        droo = [r["reward"] for r in group if r["policy"] == DROO]
        table.append({
            "scenario": label, "in_training": me["in_training"], "rank": 1 + sum(r["reward"] > me["reward"] for r in group),
            "deployable": len(group), "reward": me["reward"], "reward_ci95": me["reward_ci95"],
            "vs_robust": me["reward_vs_robust"], "vs_robust_ci95": me["reward_vs_robust_ci95"],
            "best_non_learned": best_other["policy"] if best_other else "",
            "vs_best_non_learned": me["reward"] / best_other["reward"] if best_other and best_other["reward"]
            else float("nan"),
            "beats_fixed": all(me["reward"] > f for f in fixed),
            "beats_learned": all(me["reward"] > r["reward"] for r in learned),
            "beats_droo": all(me["reward"] > d for d in droo),
            "rewards": {r["policy"]: r["reward"] for r in group},
        })
    return table


def _fmt(value: float) -> str:
    return f"{value:.3f}" if value == value else "-"


def _generalisation_lines(table: list[dict[str, Any]], subject: str) -> list[str]:
    if not table:
        return []
    policies = list(table[0]["rewards"])
    lines = ["", f"## Generalisation ({subject})", "",
             f"Reward per slot of every deployable policy on every scenario row (the same seeded episodes for "
             f"all); `rank` is {subject}'s place among them, `/ robust` its ratio to the robust planner (+- the 95 % "
             f"interval of the per-episode reward difference, over the robust planner's reward), "
             f"`/ best non-learned` its ratio to the best planner or rule of the row. `train` marks rows "
             f"inside the training distribution.", "",
             "| scenario | train | rank | / robust | / best non-learned | " + " | ".join(policies) + " |",
             "|" + " --- |" * (5 + len(policies))]
    for t in table:
        cells = " | ".join(_fmt(t["rewards"].get(p, float("nan"))) for p in policies)
        lines.append(f"| {t['scenario']} | {'yes' if t['in_training'] else 'no'} | {t['rank']}/{t['deployable']} | "
                     f"{_fmt(t['vs_robust'])} +- {_fmt(t['vs_robust_ci95'])} | "
                     f"{_fmt(t['vs_best_non_learned'])} ({t['best_non_learned']}) | {cells} |")
    short = [t["scenario"] for t in table if not t["vs_robust"] >= 0.97 or not t["beats_fixed"] or not t["beats_droo"]]
    lines += ["", f"Rows where {subject} is below 0.97 of the robust planner or not above every fixed rule and "
              f"{DROO}: "
              + (", ".join(short) if short else "none") + "."]
    under = [t["scenario"] for t in table if t["vs_robust"] + t["vs_robust_ci95"] < 0.97]
    lines += ["", f"Rows where the whole interval of {subject}'s ratio to the robust planner lies below 0.97: "
              + (", ".join(under) if under else "none") + "."]
    return lines


def write_report(path: Path, rows: list[dict[str, Any]], pngs: list[Path], calib: dict[str, Any],
                 table: list[dict[str, Any]], subject: str, pairs: list[dict[str, Any]]) -> None:
    default = sorted((r for r in rows if r["axis"] == "default"), key=lambda r: -r["reward"])
    lines = ["# Evaluation", "", "Default scenario; mean +- 95 % CI over seeded episodes (the same for every "
             "policy). Reward ratios: `/ oracle` to the oracle with perfect knowledge of the realised channel and "
             "capacity on every codec; `/ own oracle` to the oracle on the policy's own action set "
             "(`oracle:<codecs>`); `/ planner` to the oracle's solver run on the estimates; `/ robust` to the "
             "robust planner (expected reward under the known estimate-error model). The GRL policies play the "
             "candidate their model-based critic rates best (`policy.critic`); "
             f"`{subject}:actor` is {subject}'s actor alone (its argmax), what it would play without the critic.", ""]
    head = "| policy | " + " | ".join(LABELS[m] for m in LABELS) + " | " + \
        " | ".join(f"/ {name}" for name in REFERENCE_RATIOS.values()) + " |"
    lines += [head, "|" + " --- |" * (1 + len(LABELS) + len(REFERENCE_RATIOS))]
    for r in default:
        cells = [f"{r[m]:.3f} +- {r[f'{m}_ci95']:.3f}" for m in LABELS]
        ratios = [_fmt(r[key]) for key in REFERENCE_RATIOS]
        lines.append(f"| {r['policy']} | " + " | ".join(cells + ratios) + " |")
    lines += _paired_lines(pairs, subject)
    lines += _generalisation_lines(table, subject)
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
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    lines += ["", "Full results (every scenario and policy): `results.csv`.", ""]
    path.write_text("\n".join(lines))
