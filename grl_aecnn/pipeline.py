"""The pipeline: stages in data-flow order, one MLflow parent run, reuse of finished stages.

A stage is a function ``(cfg, resume) -> summary dict``. When it finishes, the pipeline
writes ``<run_dir>/<stage>/stage.json`` with the hash of the config sections it depends
on and its MLflow run; a later run with the same hash reuses it instead of training again
(and tags its own run with the one that produced the stage). On an object store the finished
stage is then pushed there (``grl_aecnn.storage``). A resumed pipeline continues the
MLflow runs its interrupted attempt started, after closing as KILLED those a kill left RUNNING.
"""

from __future__ import annotations

import importlib
import json
import time
from typing import Any, Callable

from grl_aecnn.config import ExperimentConfig

# (stage, "module:function") in data-flow order.
STAGES: list[tuple[str, str]] = [
    ("backbone", "grl_aecnn.backbone.train:train_backbone"),
    ("codecs", "grl_aecnn.codecs.sweep:train_codecs"),
    ("policies", "grl_aecnn.policies.training:train_policies"),
    ("evaluation", "grl_aecnn.evaluation.harness:evaluate_pipeline"),
]
STAGE_NAMES = [name for name, _ in STAGES]
MARKER = "stage.json"

StageFn = Callable[[ExperimentConfig, bool], dict[str, Any]]


def _resolve(target: str) -> StageFn:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def finished_summary(cfg: ExperimentConfig, stage: str) -> dict[str, Any] | None:
    """The stored summary of a finished stage whose config is unchanged, else None."""
    marker = cfg.run_dir / stage / MARKER
    if not marker.exists():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8 or not JSON: not finished
        return None
    if not isinstance(record, dict) or record.get("hash") != cfg.stage_hash(stage):
        return None
    return record.get("summary", {})


def run_relative(value: Any, run_dir: str) -> Any:
    """``value`` with every path inside the run folder made relative to it (stage.json stays
    valid when the run moves, e.g. to or from an object store)."""
    if isinstance(value, dict):
        return {k: run_relative(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [run_relative(v, run_dir) for v in value]
    if isinstance(value, str) and value.startswith(run_dir + "/"):
        return value[len(run_dir) + 1:]
    return value


def mark_finished(cfg: ExperimentConfig, stage: str, summary: dict[str, Any], seconds: float,
                  run_id: str | None = None) -> None:
    marker = cfg.stage_dir(stage) / MARKER
    record = {"hash": cfg.stage_hash(stage), "seconds": round(seconds, 1), "mlflow_run_id": run_id,
              "summary": run_relative(json.loads(json.dumps(summary, default=str)), str(cfg.run_dir))}
    marker.write_text(json.dumps(record, indent=2))


def _producing_run(cfg: ExperimentConfig, stage: str) -> str | None:
    try:
        return json.loads((cfg.run_dir / stage / MARKER).read_text()).get("mlflow_run_id")
    except (OSError, ValueError, AttributeError):
        return None


def run_stage(cfg: ExperimentConfig, stage: str, resume: bool = True, force: bool = False) -> dict[str, Any]:
    """Run one stage (or reuse it when finished with the same config and ``force`` is False)."""
    from grl_aecnn import storage, tracking

    done = finished_summary(cfg, stage) if resume and not force else None
    if done is not None:
        print(f"[{stage}] reusing finished stage in {cfg.run_location}/{stage}")
        tracking.link_reused_stage(stage, _producing_run(cfg, stage))
        return done
    fn = _resolve(dict(STAGES)[stage])
    print(f"[{stage}] starting")
    start = time.perf_counter()
    if not resume:  # a stage started over logs to a new run
        (cfg.stage_dir(stage) / tracking.RUNS_FILE).unlink(missing_ok=True)
    with tracking.stage_run(cfg, stage) as run:
        summary = fn(cfg, resume)
    seconds = time.perf_counter() - start
    mark_finished(cfg, stage, summary, seconds, run.info.run_id)
    storage.push_stage(cfg, stage)
    print(f"[{stage}] finished in {seconds:.0f} s")
    return summary


def run_pipeline(cfg: ExperimentConfig, resume: bool = True, stop_after: str | None = None,
                 only: str | None = None) -> dict[str, dict[str, Any]]:
    """Run the stages in order under one MLflow parent run; ``only`` runs a single stage
    (re-running it even when finished), reusing the finished stages before it."""
    from grl_aecnn import tracking
    from grl_aecnn.runtime import configure_process

    from grl_aecnn.cluster.resume import write_run_config

    configure_process()
    tracking.check_reachable(tracking.tracking_uri(cfg))
    write_run_config(cfg)
    if not resume:
        (cfg.run_dir / tracking.RUNS_FILE).unlink(missing_ok=True)
    killed = tracking.close_killed_runs(cfg)
    if killed:
        print(f"closed {killed} MLflow run(s) an interrupted attempt left RUNNING (marked KILLED)")
    summaries: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    with tracking.pipeline_run(cfg) as parent:
        for stage in STAGE_NAMES:
            force = only == stage and not resume
            summaries[stage] = run_stage(cfg, stage, resume=resume or only != stage, force=force)
            if stage == (stop_after or only):
                break
        tracking.setup(cfg).log_metric("pipeline_seconds", time.perf_counter() - start)
    # A trial whose node died before its first checkpoint was retried in a new run; its own stays RUNNING.
    tracking.close_killed_runs(cfg)
    print(f"done in {time.perf_counter() - start:.0f} s; results in {cfg.run_location}; MLflow run {parent.info.run_id}")
    return summaries
