"""The `grl-aecnn` command line.

Every command takes ``--config`` (a preset in tune_configs/ or a YAML path) and repeated
``--set key=value`` overrides. Heavy imports happen inside the handlers so that
``--help`` and config errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

from grl_aecnn.ablate.cli import register as register_ablate_command
from grl_aecnn.cluster.cli import register as register_cluster_commands
from grl_aecnn.config import ConfigError, ExperimentConfig, dump_config, load_config, one_line, preset_names
from grl_aecnn.input_files import BadFile
from grl_aecnn.pipeline import STAGE_NAMES
from grl_aecnn.profile import ProfileError

if TYPE_CHECKING:
    from pathlib import Path

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


REF_FORMS = "a path, an MLflow run id, runs:/<run id>/<path> or models:/<name>@<alias>"


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

    from grl_aecnn.storage import pull

    cfg = _config(args)
    pull(cfg)
    check_run_inputs(cfg, resume, stop_after, only)
    run_pipeline(cfg, resume=resume, stop_after=stop_after, only=only)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, resume=not args.fresh, stop_after=args.stop_after)


def cmd_train_backbone(args: argparse.Namespace) -> int:
    return _run(args, resume=not args.fresh, stop_after="backbone", only="backbone")


def _fetch(cfg: ExperimentConfig, value: str, what: str, run_path: str, kind: str | None = None) -> "Path":
    """A path, MLflow run id or URI given on the command line, fetched into ``<run_dir>/inputs``."""
    from grl_aecnn.uris import fetch

    return fetch(value, cfg.run_dir / "inputs", what, run_path, kind)


def _add_init_from(args: argparse.Namespace, key: str, run_path: str, kind: str, pattern: str) -> str | None:
    """Fetch ``--init-from`` (when given) and add ``key=<its local copy>`` to the overrides."""
    import json

    from grl_aecnn.uris import single

    if not args.init_from:
        return None
    found = single(_fetch(_config(args), args.init_from, "--init-from", run_path, kind), pattern, "--init-from")
    local = str((found.parent if pattern.endswith(".json") else found).resolve())
    args.overrides = [*args.overrides, f"{key}={json.dumps(local)}"]
    return local


def cmd_train_codecs(args: argparse.Namespace) -> int:
    _add_init_from(args, "codecs.init_from", "codecs", "codec", "*.safetensors")
    return _run(args, resume=not args.fresh, stop_after="codecs", only="codecs")


def cmd_train_policy(args: argparse.Namespace) -> int:
    local = _add_init_from(args, "policy.ppo.init_from", "policies", "policy", "policy.json")
    if local is not None:
        from grl_aecnn.rl.finetune import check_compatible

        check_compatible(local, _config(args).policy.ppo)
    return _run(args, resume=args.resume or not args.fresh, stop_after="policies", only="policies")


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.profile is None:
        return _run(args, resume=True, stop_after="evaluation", only="evaluation")
    cfg = _config(args)
    from grl_aecnn import tracking
    from grl_aecnn.evaluation.harness import evaluate
    from grl_aecnn.preflight import check_sweep
    from grl_aecnn.profile import load_profile

    check_sweep(cfg)
    profile = load_profile(_fetch(cfg, args.profile, "--profile", "profile.json"))
    profile.select(cfg.scenario.codecs)
    trained = _policies_index(cfg, args.policies) if args.policies else []
    tracking.check_reachable(tracking.tracking_uri(cfg))
    out = args.out or str(cfg.stage_dir("evaluation"))
    with tracking.stage_run(cfg, "evaluation", profile=args.profile):
        summary = evaluate(profile, cfg.scenario, cfg.evaluation, out, trained=trained, seed=cfg.seed)
    print(f"report: {summary['report']}")
    return 0


def _policies_index(cfg: ExperimentConfig, value: str) -> list["PolicySpec"]:
    """The trained policies of ``--policies`` (an index, a policies run, one policy model);
    BadFile naming it when unreadable."""
    from grl_aecnn.policies.registry import read_policies
    from grl_aecnn.uris import single

    path = _fetch(cfg, value, "--policies", "policies", kind="policy")
    model = value if value.startswith("models:/") else None
    if model:
        path = single(path, "policy.json", "--policies").parent
    try:
        return read_policies(path, model)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise BadFile(f"policies index {value}: {type(err).__name__}: {err}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from grl_aecnn.export import export_run
    from grl_aecnn.storage import pull

    cfg = _config(args)
    pull(cfg)
    out = Path(args.out) if args.out else cfg.run_dir / "export"
    manifest = export_run(cfg, out, codecs=args.codec or None, policies=args.policy or None)
    print(f"exported {len(manifest['codecs'])} codec point(s) and {len(manifest['policies'])} policy(ies) to {out}")
    return 0


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
    p.add_argument("--init-from", metavar="REF", default=None,
                   help="fine-tune: points of the same codec and shapes start from this trained codec "
                        f"({REF_FORMS}; e.g. models:/quick.codec.aecnn-k8-b4@champion)")

    p = command("train-policy", "train the GRL policies (RLlib PPO) and DROO on the codec profile",
                cmd_train_policy)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from the last checkpoint (default)")
    group.add_argument("--fresh", action="store_true", help="start training over")
    p.add_argument("--init-from", metavar="REF", default=None,
                   help="fine-tune: start PPO from an exported policy of the same codec set "
                        f"({REF_FORMS}; e.g. models:/quick.grl-aecnn@champion)")

    p = command("evaluate", "compare all policies on the same seeded episodes across the scenario sweep",
                cmd_evaluate)
    p.add_argument("--profile", metavar="REF", default=None,
                   help="evaluate on this codec profile directly (default: the pipeline's codec stage): a "
                        "profile.json, or the codecs stage's MLflow run id or runs:/<run id>/profile.json")
    p.add_argument("--policies", metavar="REF", default=None,
                   help="with --profile: trained policies to include: a policies.json index, the policies "
                        f"stage's MLflow run id, or one policy ({REF_FORMS})")
    p.add_argument("--out", metavar="DIR", default=None, help="with --profile: output folder")

    p = command("export", "write the device encoders, server decoders+tails and GRL policies of a run as "
                          "ONNX files that run with onnxruntime alone (no grl_aecnn, no Ray)", cmd_export)
    p.add_argument("--codec", action="append", default=[], metavar="POINT", help="only this codec point (repeatable)")
    p.add_argument("--policy", action="append", default=[], metavar="NAME", help="only this policy (repeatable)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: <run folder>/export)")

    cfg_parser = sub.add_parser("config", help="inspect configuration", description="inspect configuration")
    cfg_sub = cfg_parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cfg_sub.add_parser("show", help="print the resolved config (preset + overrides) as YAML")
    _add_config_args(show)
    show.set_defaults(handler=cmd_config_show)
    register_cluster_commands(sub)
    register_ablate_command(sub)
    return parser


def _version() -> str:
    from grl_aecnn import __version__

    return f"grl-aecnn {__version__}"


def main(argv: list[str] | None = None) -> int:
    from grl_aecnn.runtime import configure_process
    from grl_aecnn.storage import StoreUnavailable
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
    except (TrackingUnavailable, StoreUnavailable) as err:
        print(f"grl-aecnn: {one_line(err)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("grl-aecnn: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
