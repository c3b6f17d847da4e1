"""MLflow in one place: where runs go, the pipeline's parent run, nested stage runs.

Embedded default: an sqlite store and an artifact folder under ``./mlruns`` in the current
directory (browse with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``).
``MLFLOW_TRACKING_URI`` (or ``tracking.tracking_uri``) points everything elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import mlflow
    from mlflow.tracking import MlflowClient

    from grl_aecnn.config import ExperimentConfig

LOCAL_STORE = Path("mlruns")
MAX_PARAM_LEN = 6000
RUNS_FILE = "mlflow_runs.json"  # in a run or stage folder: the MLflow runs it logs to, by name
RUN_DIR_TAG = "grl_aecnn.run_dir"
REUSED_TAG = "grl_aecnn.reused."  # + stage: on a pipeline run, the run that produced a reused stage


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached: fail before any training starts."""


def tracking_uri(cfg: "ExperimentConfig | None" = None) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else the local sqlite store (absolute path)."""
    if cfg is not None and cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = (Path.cwd() / LOCAL_STORE).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def artifact_root(uri: str) -> str | None:
    """Artifacts beside an sqlite store (``<db folder>/artifacts``); servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise TrackingUnavailable unless an HTTP tracking server answers its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user-configured URI
            if resp.status == 200:
                return
            reason = f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = str(getattr(err, "reason", err))
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} is not reachable ({reason}); start it, fix MLFLOW_TRACKING_URI, "
        "or unset it to use the local store ./mlruns"
    )


def setup(cfg: "ExperimentConfig") -> "mlflow":
    """Point MLflow at the configured store, check it answers, and select the experiment.

    The experiment is created here, in the driver, before any Ray worker logs to it: two
    workers creating a new sqlite store at once race on its migrations.
    """
    import mlflow

    uri = tracking_uri(cfg)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = cfg.tracking.experiment
    if mlflow.get_experiment_by_name(name) is None:
        root = artifact_root(uri)
        mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
    mlflow.set_experiment(name)
    return mlflow


def log_config(cfg: "ExperimentConfig") -> None:
    """All resolved settings as params, plus the YAML as an artifact."""
    import mlflow

    from grl_aecnn.config import dump_config

    params = {k: str(v)[:MAX_PARAM_LEN] for k, v in cfg.flat().items()}
    mlflow.log_params(params)
    mlflow.log_text(dump_config(cfg), "config.yaml")


def recorded_run(client: "MlflowClient", record: Path, name: str) -> str | None:
    """The run ``name`` recorded in ``record`` if it exists in this store and did not finish."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = json.loads(record.read_text()).get(name)
        return run_id if client.get_run(run_id).info.status != "FINISHED" else None
    except (OSError, ValueError, AttributeError, TypeError, MlflowException):
        return None


def record_run(record: Path, name: str, run_id: str) -> None:
    """Remember a run so a resumed attempt logs to it again."""
    try:
        runs = json.loads(record.read_text())
    except (OSError, ValueError):
        runs = {}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({**(runs if isinstance(runs, dict) else {}), name: run_id}, indent=1))


@contextlib.contextmanager
def _resumable_run(cfg: "ExperimentConfig", folder: Path, name: str, run_name: str,
                   tags: dict[str, str]) -> Iterator["mlflow.ActiveRun"]:
    """Reopen the unfinished run recorded in ``folder`` (a resumed attempt), else start one."""
    mlflow = setup(cfg)
    nested = mlflow.active_run() is not None
    run_id = recorded_run(mlflow.tracking.MlflowClient(), folder / RUNS_FILE, name)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested) as run:
        if run_id is None:
            record_run(folder / RUNS_FILE, name, run.info.run_id)
            mlflow.set_tags({RUN_DIR_TAG: cfg.run_location, **tags})
            log_config(cfg)
        else:
            print(f"[{name}] continuing MLflow run {run_id}")
        yield run


@contextlib.contextmanager
def stage_run(cfg: "ExperimentConfig", stage: str, **tags: str) -> Iterator["mlflow.ActiveRun"]:
    """A run for one stage, nested under the pipeline's parent run when one is active; a
    resumed stage continues the run its interrupted attempt started."""
    with _resumable_run(cfg, cfg.run_dir / stage, stage, f"{cfg.name}/{stage}",
                        {"grl_aecnn.stage": stage, "grl_aecnn.config_hash": cfg.stage_hash(stage), **tags}) as run:
        yield run


@contextlib.contextmanager
def pipeline_run(cfg: "ExperimentConfig") -> Iterator["mlflow.ActiveRun"]:
    """The pipeline's parent run: the interrupted one when resuming, else a new one."""
    with _resumable_run(cfg, cfg.run_dir, "pipeline", f"{cfg.name}/pipeline", {"grl_aecnn.stage": "pipeline"}) as run:
        yield run


def close_killed_runs(cfg: "ExperimentConfig") -> int:
    """Mark KILLED the runs of this run folder a killed attempt left RUNNING; how many."""
    mlflow = setup(cfg)
    client = mlflow.tracking.MlflowClient()
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=10_000,
                              filter_string=f"tags.`{RUN_DIR_TAG}` = '{cfg.run_location}' and attributes.status = 'RUNNING'")
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def link_reused_stage(stage: str, run_id: str | None) -> None:
    """Tag the active (pipeline) run with the run that produced a stage it reuses."""
    import mlflow

    if run_id and mlflow.active_run() is not None:
        mlflow.set_tag(REUSED_TAG + stage, run_id)


def child_run_tags(location: str) -> dict[str, Any]:
    """Tags that nest a run started elsewhere (a Tune trial) under the active run, and name
    its run's location (``cfg.run_location``: so a resumed run closes it if a kill left it RUNNING)."""
    import mlflow

    active = mlflow.active_run()
    return {**({"mlflow.parentRunId": active.info.run_id} if active else {}), RUN_DIR_TAG: location}
