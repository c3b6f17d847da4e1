"""Rate-accuracy across CNN families: the codec profiles (and, where present, the evaluations) of
finished runs side by side, as a table and one plot of top-1 drop against compression ratio.

    python bench/bench_families.py outputs/quick outputs/quick-mobilenet outputs/quick-efficientnet

Each run is a run folder (`outputs/<name>`) trained by `grl-aecnn run` with its own
`backbone.arch` and `codecs.split`: the same sweep, profile and simulator for every family. The
plot (`--plot`, default `families.png` in the current folder) draws each family in one colour,
each codec with its own marker; the table gives every family's best point at or beyond 256x and
its rewards on the default scenario and over every scenario row.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from grl_aecnn.codecs.sweep import best_aecnn, capacity_bytes
from grl_aecnn.profile import CodecProfile, OperatingPoint, load_profile

TARGET_RATIO = 256.0
MARKERS = {"aecnn": "o", "bottlenetpp": "s", "deepjscc": "^"}
POLICIES = ("grl-aecnn", "robust-planner", "oracle:aecnn")  # each with its gain over DROO-AECNN
DROO = "droo-aecnn"
SUBJECT = "grl-aecnn"
SNR_DB = 10.0  # DeepJSCC's bytes: what a capacity-achieving link carries in its channel uses here


def sent_bytes(p: OperatingPoint) -> float:
    return p.payload_bytes if p.payload_bytes is not None else capacity_bytes(p, SNR_DB)


def ratio(profile: CodecProfile, p: OperatingPoint) -> float:
    """float32 split tensor bytes over the bytes the point sends."""
    c, h, w = profile.backbone.split_shape
    return 4.0 * c * h * w / sent_bytes(p)


def codec_points(profile: CodecProfile) -> list[OperatingPoint]:
    """The trained codecs' points (BottleNet++ as published, without the added entropy coder)."""
    return [p for p in profile.points if p.codec in MARKERS and not (p.codec == "bottlenetpp" and p.entropy_coded)]


def evaluation_cells(run: Path) -> list[str]:
    """DROO-AECNN's reward per slot on the default scenario, each of `POLICIES`' reward there with
    its gain over DROO-AECNN, and GRL-AECNN's range of ratios to the robust planner over every
    scenario row; dashes if the run was not evaluated."""
    path = run / "evaluation" / "results.csv"
    if not path.exists():
        return ["-"] * (len(POLICIES) + 2)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    default = {r["policy"]: float(r["reward"]) for r in rows if r["axis"] == "default"}
    droo = default[DROO]
    vs_robust = [float(r["reward_vs_robust"]) for r in rows if r["policy"] == SUBJECT]
    return ([f"{droo:.2f}"] + [f"{default[p]:.2f} ({100 * (default[p] / droo - 1):+.1f} %)" for p in POLICIES]
            + [f"{min(vs_robust):.3f}-{max(vs_robust):.3f}"])


def plot(profiles: dict[str, CodecProfile], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab10")
    for i, profile in enumerate(profiles.values()):
        clean = profile.backbone.clean_accuracy
        for codec, marker in MARKERS.items():
            pts = sorted((ratio(profile, p), 100 * (clean - p.accuracy)) for p in codec_points(profile)
                         if p.codec == codec)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=marker, color=colours(i), ls="-" if codec == "aecnn" else ":",
                        label=f"{profile.backbone.arch} {codec}")
    ax.axvline(TARGET_RATIO, color="grey", ls=":", lw=1)
    ax.axhline(2.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xticks([t for t in (50, 100, 200, 300, 500, 1000, 2000, 5000) if low <= t <= high])
    ax.xaxis.set_major_formatter(FormatStrFormatter("%gx"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("compression vs the float32 split tensor [x]")
    ax.set_ylabel("top-1 drop from the clean backbone [points]")
    ax.set_title("Rate-accuracy per CNN family (AECNN solid; 256x and 2-point lines)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def drop(profile: CodecProfile, p: OperatingPoint) -> str:
    return f"{100 * (profile.backbone.clean_accuracy - p.accuracy):.1f} +- {100 * (p.drop_ci95 or 0):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/<name>) with a codecs stage")
    parser.add_argument("--plot", type=Path, default=Path("families.png"), help="where the plot goes")
    args = parser.parse_args()
    profiles = {run.name: load_profile(run / "codecs" / "profile.json") for run in args.runs}
    print(f"Drops in points of top-1 with the 95 % test-set interval; DeepJSCC's bytes: capacity at {SNR_DB:g} dB "
          f"in its channel uses; rewards per slot on the default scenario (gain over {DROO}); "
          f"{SUBJECT} / robust: its range of ratios to the robust planner over every scenario row.\n")
    print("| run | arch | split | float32 | clean top-1 | best AECNN >= 256x | bytes | ratio | drop | "
          + " | ".join([DROO, *POLICIES, f"{SUBJECT} / robust"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * (len(POLICIES) + 2))
    for run in args.runs:
        profile = profiles[run.name]
        bb, best = profile.backbone, best_aecnn(profile, TARGET_RATIO)
        c, h, w = bb.split_shape
        head = f"| {run.name} | {bb.arch} | {bb.split} {c}x{h}x{w} | {4 * c * h * w / 1024:.0f} KiB | " \
               f"{100 * bb.clean_accuracy:.1f} % | "
        point = "none | - | - | -" if best is None else \
            f"{best.id} | {sent_bytes(best):.1f} | {ratio(profile, best):.0f}x | {drop(profile, best)}"
        print(head + point + " | " + " | ".join(evaluation_cells(run)) + " |")
    print("\n| run | point | bytes | ratio | top-1 | drop | device MFLOP |")
    print("|---|---|---|---|---|---|---|")
    for name, profile in profiles.items():
        for p in sorted(codec_points(profile), key=lambda p: (p.codec, -ratio(profile, p))):
            print(f"| {name} | {p.id} | {sent_bytes(p):.1f} | {ratio(profile, p):.0f}x | {100 * p.accuracy:.1f} % "
                  f"| {drop(profile, p)} | {p.device_flops / 1e6:.2f} |")
    plot(profiles, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
