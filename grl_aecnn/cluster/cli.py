"""``grl-aecnn submit``, ``jobs`` and ``resume``: run the pipeline on a Ray cluster and continue it.

Registered into the main parser by ``register(sub)``; Ray and MLflow are imported inside the
handlers so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from grl_aecnn.config import ConfigError, resolve_config_path

Handler = Callable[[argparse.Namespace], int]
NOT_SUBMITTABLE = ("submit", "jobs")

SUBMIT_HELP = """\
Send a grl-aecnn command to a Ray cluster as a Ray Job. The job runs
`python -m grl_aecnn.cli COMMAND...` in a copy of this project (code and tune_configs/),
with MLFLOW_TRACKING_URI passed through. The cluster's Python must have the dependencies.

examples:
  export RAY_ADDRESS=http://127.0.0.1:8265 MLFLOW_TRACKING_URI=http://127.0.0.1:5000
  grl-aecnn submit --follow -- run --config quick --set output_dir=s3://my-bucket/runs
  grl-aecnn submit -- train-backbone --config paper --set backbone.use_gpu=true
  grl-aecnn submit -- resume s3://my-bucket/runs/quick
"""

RESUME_HELP = """\
Continue an interrupted pipeline run: re-run it with the config it saved in
<run>/config.yaml; finished stages are reused, the interrupted one continues from its checkpoints.

examples:
  grl-aecnn resume quick                      # outputs/quick
  grl-aecnn resume /shared/outputs/paper --stop-after codecs
  grl-aecnn resume s3://my-bucket/runs/quick  # a run on an object store (AWS_ENDPOINT_URL for MinIO etc.)
"""


def _cluster_errors(handler: Handler) -> Handler:
    """Print a ClusterError as one line and exit with its code (2: usage, 3: unreachable)."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from grl_aecnn.cluster.jobs import ClusterError

        try:
            return handler(args)
        except ClusterError as err:
            print(f"grl-aecnn: {err}", file=sys.stderr)
            return err.exit_code

    return wrapped


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, metavar="URL",
                   help="the cluster's dashboard address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")


def _env_pairs(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE``, or ``KEY`` to copy the local value."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in os.environ:
                raise ConfigError(f"--env {key}: not set locally; use --env {key}=VALUE")
            value = os.environ[key]
        env[key] = value
    return env


def _checked_command(command: list[str]) -> tuple[list[str], argparse.Namespace]:
    """Parse the job's command here, so typos and config errors stop before anything is sent.

    A ``--config`` file is rewritten relative to the project root, where the job finds it.
    """
    from grl_aecnn.cli import build_parser
    from grl_aecnn.cluster.jobs import project_relative

    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("submit: no command given, e.g. grl-aecnn submit -- run --config quick")
    if command[0] in NOT_SUBMITTABLE:
        raise ConfigError(f"submit: {command[0]!r} cannot run as a job")
    parsed = build_parser().parse_args(command)
    if getattr(parsed, "config", None) is None:
        return command, parsed
    path = resolve_config_path(parsed.config)
    shipped = project_relative(path)
    out: list[str] = []
    it = iter(command)
    for token in it:
        if token in ("--config", "-c"):
            out += [token, shipped]
            next(it)
        elif token.startswith("--config="):
            out.append(f"--config={shipped}")
        else:
            out.append(token)
    return out, parsed


def _preflight(parsed: argparse.Namespace) -> str | None:
    """Check the job's tracking server from here; warn where results would stay on the head node.

    Returns the tracking URI the job will use, if any.
    """
    from grl_aecnn.config import load_config
    from grl_aecnn.tracking import check_reachable

    cfg = load_config(parsed.config, parsed.overrides) if getattr(parsed, "config", None) else None
    uri = (cfg.tracking.tracking_uri if cfg else None) or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        check_reachable(uri)
    else:
        print("grl-aecnn: warning: MLFLOW_TRACKING_URI is not set, so the job logs to an sqlite store in its "
              "temporary working dir on the cluster; point it at a shared `mlflow server`", file=sys.stderr)
    from grl_aecnn import storage

    if cfg is not None and storage.is_uri(cfg.output_dir):
        storage.check(cfg.output_dir)
    elif cfg is not None and not Path(cfg.output_dir).is_absolute():
        print(f"grl-aecnn: warning: output_dir {cfg.output_dir!r} is relative, so outputs stay in the job's "
              "temporary working dir; set --set output_dir=s3://bucket/prefix", file=sys.stderr)
    return uri


@_cluster_errors
def cmd_submit(args: argparse.Namespace) -> int:
    from grl_aecnn.cluster import jobs

    command, parsed = _checked_command(args.command)
    extra_env = _env_pairs(args.env)
    overlay = yaml.safe_load(Path(args.runtime_env).read_text()) if args.runtime_env else None
    jobs.cluster_address(args.address)  # no address: say what to set before anything else
    if args.check_tracking:
        _preflight(parsed)
    client = jobs.connect(args.address)
    job_id = jobs.submit(client, command, python=args.python, extra_env=extra_env, overlay=overlay)
    print(job_id)
    if not args.follow:
        print(f"follow it with: grl-aecnn jobs logs --follow {job_id}", file=sys.stderr)
        return 0
    return _follow_to_exit_code(client, job_id)


def _follow_to_exit_code(client: Any, job_id: str) -> int:
    from grl_aecnn.cluster import jobs

    try:
        status = jobs.follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\ngrl-aecnn: stopped following; job {job_id} keeps running "
              f"(grl-aecnn jobs stop {job_id} ends it)", file=sys.stderr)
        return 130
    if str(status) == "SUCCEEDED":
        return 0
    print(f"grl-aecnn: job {job_id} {status}: {jobs.info(client, job_id).message}", file=sys.stderr)
    return 1


@_cluster_errors
def cmd_jobs_list(args: argparse.Namespace) -> int:
    from grl_aecnn.cluster import jobs

    for job in jobs.list_jobs(jobs.connect(args.address)):
        print(jobs.describe(job))
    return 0


@_cluster_errors
def cmd_jobs_status(args: argparse.Namespace) -> int:
    from grl_aecnn.cluster import jobs

    job = jobs.info(jobs.connect(args.address), args.job_id)
    print(jobs.describe(job))
    if job.message:
        print(job.message)
    return 0


@_cluster_errors
def cmd_jobs_logs(args: argparse.Namespace) -> int:
    from grl_aecnn.cluster import jobs

    client = jobs.connect(args.address)
    if args.follow:
        return _follow_to_exit_code(client, args.job_id)
    jobs.info(client, args.job_id)  # a clear error for an unknown id
    print(client.get_job_logs(args.job_id), end="")
    return 0


@_cluster_errors
def cmd_jobs_stop(args: argparse.Namespace) -> int:
    from grl_aecnn.cluster import jobs

    client = jobs.connect(args.address)
    jobs.info(client, args.job_id)
    stopped = client.stop_job(args.job_id)
    print(f"{args.job_id}: {'stopping' if stopped else 'not running'}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from grl_aecnn import storage
    from grl_aecnn.cluster.resume import find_run, remote_run_config, run_config
    from grl_aecnn.pipeline import run_pipeline

    from grl_aecnn.uris import fetch_run_config, is_reference

    if storage.is_uri(args.run) or storage.is_uri(args.output_dir) and not is_reference(args.run):
        uri = args.run if storage.is_uri(args.run) else storage.join(args.output_dir, args.run)
        cfg = remote_run_config(uri, args.overrides)
    else:
        run_dir = fetch_run_config(args.run, Path(args.output_dir)) if is_reference(args.run) else \
            find_run(args.run, args.output_dir)
        cfg = run_config(run_dir, args.overrides)
    print(f"resuming {cfg.run_location}")
    storage.pull(cfg)
    run_pipeline(cfg, resume=True, stop_after=args.stop_after)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``submit``, ``jobs`` and ``resume`` to the main parser's subcommands."""
    from grl_aecnn.pipeline import STAGE_NAMES

    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("submit", help="run a grl-aecnn command on a Ray cluster as a Ray Job",
                       description=SUBMIT_HELP, formatter_class=raw)
    _add_address(p)
    p.add_argument("--follow", "-f", action="store_true",
                   help="stream the job's logs until it ends; exit 1 unless it succeeded")
    p.add_argument("--python", default="python", metavar="EXE",
                   help="the cluster's interpreter that has the dependencies (default: python on its PATH)")
    p.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="also set this variable in the job (KEY alone copies the local value; repeatable)")
    p.add_argument("--runtime-env", default=None, metavar="YAML",
                   help="extra runtime_env keys (pip, py_executable, env_vars, excludes) merged into "
                        "platform/runtime_env.yaml")
    p.add_argument("--no-tracking-check", dest="check_tracking", action="store_false",
                   help="do not check MLFLOW_TRACKING_URI from here (when only the cluster can reach it)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the grl-aecnn command the job runs, after --")
    p.set_defaults(handler=cmd_submit)

    jobs_parser = sub.add_parser("jobs", help="list, inspect, follow and stop Ray Jobs",
                                 description="list, inspect, follow and stop Ray Jobs on a cluster")
    actions = jobs_parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    for name, help_, handler in (("list", "all jobs, newest first", cmd_jobs_list),
                                 ("status", "one job's status and message", cmd_jobs_status),
                                 ("logs", "one job's logs", cmd_jobs_logs),
                                 ("stop", "ask a running job to stop", cmd_jobs_stop)):
        action = actions.add_parser(name, help=help_, description=help_)
        _add_address(action)
        if name != "list":
            action.add_argument("job_id", metavar="ID", help="the submission id printed by submit")
        if name == "logs":
            action.add_argument("--follow", "-f", action="store_true",
                                help="stream until the job ends; exit 1 unless it succeeded")
        action.set_defaults(handler=handler)

    p = sub.add_parser("resume", help="continue an interrupted pipeline run from its saved config",
                       description=RESUME_HELP, formatter_class=raw)
    p.add_argument("run", metavar="RUN", help="a run folder or store URI (s3://bucket/prefix/<name>), a run name "
                   "under --output-dir, or an MLflow run id "
                   "(its config.yaml is fetched into --output-dir)")
    p.add_argument("--output-dir", default="outputs",
                   help="where run names are looked up: a folder or a store URI (default: outputs)")
    p.add_argument("--stop-after", choices=STAGE_NAMES, default=None, help="stop after this stage")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the saved config (tracking, ray; stage keys restart that stage)")
    p.set_defaults(handler=cmd_resume)
