"""What the model-based critic adds to a trained GRL policy: actor alone vs critic settings,
as reward per slot and ratio to the robust planner, on chosen scenario rows, side by side.

    .venv/bin/python bench/bench_critic.py --run outputs/quick [--rows default network=30x4 ...]
        [--critic 8,8,8,8 --critic 16,8,16,8] [--episodes 4] [--slots 20]

Every setting plays the same seeded episodes (common random numbers) as the robust planner;
the ratio's interval is over episodes (mean of per-episode ratios, 95 % t-interval). Rows are
`default`, `field=value` (one scenario field, or `network=NxM`) or a combination name of the
run's sweep file. The decision time per slot of each setting is printed beside it.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

from grl_aecnn.config import load_config
from grl_aecnn.evaluation.harness import ROBUST, load_sweep, run_policy, scenario_with
from grl_aecnn.policies.registry import PolicySpec, read_index
from grl_aecnn.policies.settings import ACTOR_ONLY, CriticConfig
from grl_aecnn.profile import load_profile
from grl_aecnn.runtime import configure_process
from grl_aecnn.stats import ci95

DEFAULT_ROWS = ("default", "network=30x4", "deadline_max_s=0.05", "channel_est_error_db=4.0",
                "large-tight-blind", "small-volatile", "fast-deadlines-good-links", "harsh-penalty")


def scenario_rows(cfg, rows: list[str]) -> list[tuple[str, object]]:
    base = cfg.scenario  # the episode length is set per job (--slots)
    combos = load_sweep(cfg.evaluation.sweep).combinations
    out = []
    for row in rows:
        if row == "default":
            out.append((row, base))
        elif row in combos:
            out.append((row, scenario_with(base, combos[row])))
        else:
            key, value = row.split("=", 1)
            out.append((row, scenario_with(base, {key: yaml.safe_load(value)})))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("outputs/quick"), help="run folder (local)")
    parser.add_argument("--policy", default="grl-aecnn")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--critic", action="append", default=[],
                        metavar="OP,LOCAL,SAMPLED,DRAWS[,POLISH[,POLISH_DEVICES]]",
                        help="a critic setting: order-preserving, cut-back and sampled candidates, draws, polish "
                             "rounds and the devices a round may change (default: the run's policy.critic)")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--robust-samples", type=int, default=None)
    args = parser.parse_args()
    configure_process()

    cfg = load_config(str(args.run / "config.yaml"))
    profile = load_profile(args.run / "codecs" / "profile.json")
    spec = next(s for s in read_index(args.run / "policies" / "policies.json") if s.name == args.policy)
    keys = ("order_preserving", "to_local", "sampled", "samples", "polish", "polish_devices")
    critics = [ACTOR_ONLY] + ([CriticConfig(**dict(zip(keys, map(int, c.split(","))))) for c in args.critic]
                              or [cfg.policy.critic])
    labels = ["actor alone"] + [f"critic {c.order_preserving}+{c.to_local}+{c.sampled}x{c.samples}"
                                f"p{c.polish}/{c.polish_devices}" for c in critics[1:]]
    samples = args.robust_samples or cfg.evaluation.robust_samples
    specs = [PolicySpec(ROBUST, "robust", codecs=spec.codecs, params={"samples": samples})]
    specs += [PolicySpec(label, "rllib", codecs=spec.codecs, path=spec.path, params={"critic": c.model_dump()})
              for label, c in zip(labels, critics)]
    jobs = [(s, sc.model_copy(update={"episode_slots": args.slots}), profile, args.episodes, cfg.seed)
            for _, sc in scenario_rows(cfg, args.rows) for s in specs]
    with ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=get_context("spawn")) as pool:
        runs = list(pool.map(run_policy, *zip(*jobs)))
    per_row = len(specs)
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    print(f"{args.policy} from {args.run}: {args.episodes} episodes x {args.slots} slots per row, robust planner "
          f"with {samples} draws; ratio = reward / robust planner's (mean of episodes, CI95), ms = decision time")
    for i, row in enumerate(args.rows):
        group = runs[i * per_row:(i + 1) * per_row]
        robust = np.array(group[0].episodes["reward"])
        cells = [f"robust {robust.mean():.3f}"]
        for label, run in zip(labels, group[1:]):
            reward = np.array(run.episodes["reward"])
            mean, half = ci95(list(reward / robust))
            ratios[label].append(reward.mean() / robust.mean())
            ms = 1e3 * run.seconds / (args.episodes * args.slots)
            cells.append(f"{label} {reward.mean():.3f} ({mean:.3f} +- {half:.3f}, {ms:.1f} ms)")
        print(f"{row:>28}: " + " | ".join(cells))
    for label in labels:
        print(f"{'mean ratio':>28}: {label} {np.mean(ratios[label]):.3f}, lowest {np.min(ratios[label]):.3f}")


if __name__ == "__main__":
    main()
