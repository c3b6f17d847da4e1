"""The `grl-aecnn` command line.

Every command takes ``--config`` (a preset in tune_configs/ or a YAML path) and repeated
``--set key=value`` overrides. Heavy imports happen inside the handlers so that
``--help`` and config errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

from grl_aecnn.cluster.cli import register as register_cluster_commands
from grl_aecnn.config import ConfigError, ExperimentConfig, dump_config, load_config, one_line, preset_names
from grl_aecnn.input_files import BadFile
from grl_aecnn.pipeline import STAGE_NAMES
from grl_aecnn.profile import ProfileError

if TYPE_CHECKING:
    from grl_aecnn.policies.registry import PolicySpec

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
BAD_INPUT: tuple[type[Exception], ...] = (ConfigError, BadFile, ProfileError, FileNotFoundError)

DESCRIPTION = """\
Train and evaluate semantic compression (AECNN) and graph-RL offloading (GRL-AECNN)
of CNN inference in multi-access edge computing.

Pipeline: dataset -> backbone (Ray Train) -> codec sweep (Ray Tune) -> codec profile ->
MEC simulator -> policies (RLlib PPO, DROO, rules, oracle) -> evaluation -> report.
Every stage is tracked in MLflow (default store: ./mlruns).

examples:
  grl-aecnn run                                  # whole pipeline, quick preset
  grl-aecnn run --config paper                   # ResNet-50 / Caltech-101 preset (GPU cluster)
  grl-aecnn train-backbone --set backbone.epochs=1
  grl-aecnn config show --set data.input_size=64
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", default="quick", metavar="NAME|PATH",
        help=f"preset name ({', '.join(preset_names())}) or a YAML file (default: quick)",
    )
    p.add_argument(
        "--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set backbone.epochs=2 (repeatable; values are YAML)",
    )


def _config(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.overrides)


# -- handlers ---------------------------------------------------------------------------


def cmd_config_show(args: argparse.Namespace) -> int:
    print(dump_config(_config(args)), end="")
    return 0


def _run(args: argparse.Namespace, resume: bool, stop_after: str | None = None, only: str | None = None) -> int:
    """Check what the stages about to run will read, then run them (nothing is created before)."""
    from grl_aecnn.pipeline import run_pipeline
    from grl_aecnn.preflight import check_run_inputs

    cfg = _config(args)
    check_run_inputs(cfg, resume, stop_after, only)
    run_pipeline(cfg, resume=resume, stop_after=stop_after, only=only)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, resume=not args.fresh, stop_after=args.stop_after)


def cmd_train_backbone(args: argparse.Namespace) -> int:
    return _run(args, resume=not args.fresh, stop_after="backbone", only="backbone")


def cmd_train_codecs(args: argparse.Namespace) -> int:
    return _run(args, resume=not args.fresh, stop_after="codecs", only="codecs")


def cmd_train_policy(args: argparse.Namespace) -> int:
    return _run(args, resume=args.resume or not args.fresh, stop_after="policies", only="policies")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.profile is None:
        return _run(args, resume=True, stop_after="evaluation", only="evaluation")
    cfg = _config(args)
    from grl_aecnn import tracking
    from grl_aecnn.evaluation.harness import evaluate
    from grl_aecnn.preflight import check_sweep
    from grl_aecnn.profile import load_profile

    profile = load_profile(args.profile)
    profile.select(cfg.scenario.codecs)
    check_sweep(cfg)
    trained = _policies_index(args.policies) if args.policies else []
    tracking.check_reachable(tracking.tracking_uri(cfg))
    out = args.out or str(cfg.stage_dir("evaluation"))
    with tracking.stage_run(cfg, "evaluation", profile=str(args.profile)):
        summary = evaluate(profile, cfg.scenario, cfg.evaluation, out, trained=trained, seed=cfg.seed)
    print(f"report: {summary['report']}")
    return 0


def _policies_index(path: str) -> list["PolicySpec"]:
    """The trained policies listed in a policies.json index; BadFile naming it when unreadable."""
    from grl_aecnn.policies.registry import read_index

    try:
        return read_index(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise BadFile(f"policies index {path}: {type(err).__name__}: {err}") from None


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grl-aecnn", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _add_config_args(p)
        p.set_defaults(handler=handler)
        return p

    p = command("run", "run the whole pipeline; finished stages with unchanged config are reused", cmd_run)
    p.add_argument("--fresh", action="store_true", help="ignore finished stages and checkpoints; start over")
    p.add_argument(
        "--stop-after", choices=STAGE_NAMES, default=None,
        help="stop after this stage",
    )

    p = command("train-backbone", "train the backbone CNN with Ray Train (resumes from its last checkpoint)",
                cmd_train_backbone)
    p.add_argument("--fresh", action="store_true", help="discard checkpoints and train from scratch")

    p = command("train-codecs", "train codecs across operating points with Ray Tune and write the codec profile",
                cmd_train_codecs)
    p.add_argument("--fresh", action="store_true", help="discard the sweep's trials and start over")

    p = command("train-policy", "train the GRL policies (RLlib PPO) and DROO on the codec profile",
                cmd_train_policy)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from the last checkpoint (default)")
    group.add_argument("--fresh", action="store_true", help="start training over")

    p = command("evaluate", "compare all policies on the same seeded episodes across the scenario sweep",
                cmd_evaluate)
    p.add_argument("--profile", metavar="PATH", default=None,
                   help="evaluate on this codec profile directly (default: the pipeline's codec stage)")
    p.add_argument("--policies", metavar="PATH", default=None,
                   help="with --profile: a policies.json index of trained policies to include")
    p.add_argument("--out", metavar="DIR", default=None, help="with --profile: output folder")

    cfg_parser = sub.add_parser("config", help="inspect configuration", description="inspect configuration")
    cfg_sub = cfg_parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cfg_sub.add_parser("show", help="print the resolved config (preset + overrides) as YAML")
    _add_config_args(show)
    show.set_defaults(handler=cmd_config_show)
    register_cluster_commands(sub)
    return parser


def _version() -> str:
    from grl_aecnn import __version__

    return f"grl-aecnn {__version__}"


def main(argv: list[str] | None = None) -> int:
    from grl_aecnn.runtime import configure_process
    from grl_aecnn.tracking import TrackingUnavailable

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_process()
    try:
        return int(args.handler(args) or 0)
    except ConfigError as err:
        print(f"grl-aecnn: config error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG
    except BAD_INPUT as err:
        print(f"grl-aecnn: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG
    except TrackingUnavailable as err:
        print(f"grl-aecnn: {one_line(err)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("grl-aecnn: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
