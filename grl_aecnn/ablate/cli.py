"""``grl-aecnn ablate NAME``: registered into the main parser by ``register(sub)``; torch, Ray
and MLflow are imported inside the handler so ``--help`` and bad input answer at once."""

from __future__ import annotations

import argparse

from grl_aecnn.ablate.settings import ablation_names

HELP = """\
Ablate one AECNN mechanism against alternatives, as a Ray Tune experiment: every row trains
with the same budget and seeds; the table gives accuracy and bytes with CI95 over seeds and
each row's paired difference from the paper's mechanism, with a verdict. Table, JSON and plot
go to the output folder and to an MLflow run (artifacts under ablation/).

ablations (tune_configs/ablate_<name>.yaml): {names}

examples:
  grl-aecnn ablate selection                        # tiny preset: trains its backbone first
  grl-aecnn ablate recovery --run outputs/quick     # the backbone of a finished run folder
  grl-aecnn ablate entropy --run <backbone stage run id> --config quick
  grl-aecnn ablate schedule --run outputs/quick --set codecs.train_samples=4096
"""


def cmd_ablate(args: argparse.Namespace) -> int:
    from grl_aecnn.ablate.run import execute, plan

    table = execute(plan(args.name, args.run, args.config, args.overrides, args.out), args.fresh)
    print(table.read_text(), end="")
    print(f"table, plot and per-seed results: {table.parent}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="ablate one AECNN mechanism (Ray Tune, CI95 over seeds)",
                       description=HELP.format(names=", ".join(ablation_names())),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="an ablation name (see above) or an ablation YAML file")
    p.add_argument("--run", metavar="DIR|RUN_ID", default=None,
                   help="take the trained backbone from this run folder (and its config.yaml) or the backbone "
                        "stage's MLflow run id (default: train the --config preset's backbone)")
    p.add_argument("--config", "-c", default="tiny", metavar="NAME|PATH",
                   help="preset or YAML file when --run is not a run folder (default: tiny)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one experiment config key, e.g. --set codecs.train_samples=4096 (repeatable)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: <run folder>/ablations/NAME)")
    p.add_argument("--fresh", action="store_true", help="retrain every trial (default: resume an unchanged ablation)")
    p.set_defaults(handler=cmd_ablate)
