"""An ablation's table (per row: accuracy and bytes with CI95 over seeds, and the paired
difference against the paper's mechanism with its sign and a plain verdict) and its plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from grl_aecnn.ablate.experiment import Trial
from grl_aecnn.ablate.settings import AblationConfig
from grl_aecnn.ablate.stats import Estimate, estimate, paired_difference


@dataclass(frozen=True)
class Row:
    row: str
    accuracy: Estimate  # test top-1 through real bitstreams, in [0, 1]
    payload_bytes: Estimate
    d_accuracy: Estimate  # row - paper, paired by seed
    d_bytes: Estimate
    verdict: str


def judged_by_bytes(abl: AblationConfig) -> bool:
    """Entropy rows decode to the same symbols (equal accuracy): they differ in bytes only."""
    return abl.mechanism == "entropy"


def _verdict(abl: AblationConfig, row: str, d_acc: Estimate, d_bytes: Estimate) -> str:
    if row == abl.paper:
        return "paper's mechanism (reference)"
    d, unit, better = (d_bytes, "B", d_bytes.mean < 0) if judged_by_bytes(abl) else \
        (Estimate(100 * d_acc.mean, 100 * d_acc.ci95), "pts", d_acc.mean > 0)
    size = f"{d.mean:+.2f} ± {d.ci95:.2f} {unit}"
    if not d.significant:
        return f"no difference at 95 % ({size}): the paper's mechanism does not win"
    return f"{row} beats the paper's mechanism by {size}" if better else f"the paper's mechanism wins ({size})"


def build_table(abl: AblationConfig, trials: list[Trial]) -> list[Row]:
    by_row = {r: sorted((t for t in trials if t.row == r), key=lambda t: t.seed_index) for r in abl.rows or []}
    ref = by_row[abl.paper]
    rows = []
    for name, ts in by_row.items():
        acc, size = [t.accuracy for t in ts], [t.payload_bytes for t in ts]
        d_acc = paired_difference(acc, [t.accuracy for t in ref])
        d_bytes = paired_difference(size, [t.payload_bytes for t in ref])
        rows.append(Row(name, estimate(acc), estimate(size), d_acc, d_bytes, _verdict(abl, name, d_acc, d_bytes)))
    return rows


def markdown(abl: AblationConfig, name: str, rows: list[Row]) -> str:
    """The table as Markdown; accuracies in percent, intervals as ± CI95 half-widths over seeds."""
    lines = [f"### Ablation `{name}`: {abl.mechanism} ({abl.seeds} seeds, AECNN k{abl.kept_channels}/"
             f"{abl.bits}-bit; ± = CI95 over seeds; Δ = row - paper, paired by seed)", "",
             "| row | accuracy % | bytes | Δ accuracy pts | Δ bytes | verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.row} | {100 * r.accuracy.mean:.2f} ± {100 * r.accuracy.ci95:.2f} | "
                     f"{r.payload_bytes.mean:.1f} ± {r.payload_bytes.ci95:.1f} | "
                     f"{100 * r.d_accuracy.mean:+.2f} ± {100 * r.d_accuracy.ci95:.2f} | "
                     f"{r.d_bytes.mean:+.1f} ± {r.d_bytes.ci95:.1f} | {r.verdict} |")
    return "\n".join(lines) + "\n"


def as_records(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def plot(abl: AblationConfig, name: str, rows: list[Row], path: Path) -> Path:
    """Accuracy and bytes per row with CI95 error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [r.row for r in rows]
    colors = ["tab:blue" if r.row == abl.paper else "tab:gray" for r in rows]
    left.bar(names, [100 * r.accuracy.mean for r in rows], yerr=[100 * r.accuracy.ci95 for r in rows],
             color=colors, capsize=4)
    left.set_ylim(max(0.0, min(100 * (r.accuracy.mean - r.accuracy.ci95) for r in rows) - 5), None)
    left.set_ylabel("top-1 accuracy % (test)")
    right.bar(names, [r.payload_bytes.mean for r in rows], yerr=[r.payload_bytes.ci95 for r in rows],
              color=colors, capsize=4)
    right.set_ylabel("payload bytes per sample")
    fig.suptitle(f"ablation {name}: {abl.mechanism}, {abl.seeds} seeds, CI95 (blue: paper's mechanism)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
