"""MLflow in one place: where runs go, the pipeline's parent run, nested stage runs.

Embedded default: an sqlite store and an artifact folder under ``./mlruns`` in the current
directory (browse with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``).
``MLFLOW_TRACKING_URI`` (or ``tracking.tracking_uri``) points everything elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import mlflow

    from grl_aecnn.config import ExperimentConfig

LOCAL_STORE = Path("mlruns")
MAX_PARAM_LEN = 6000


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


@contextlib.contextmanager
def stage_run(cfg: "ExperimentConfig", stage: str, **tags: str) -> Iterator["mlflow.ActiveRun"]:
    """A run for one stage, nested under the pipeline's parent run when one is active."""
    mlflow = setup(cfg)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=f"{cfg.name}/{stage}", nested=nested) as run:
        mlflow.set_tags({"grl_aecnn.stage": stage, "grl_aecnn.config_hash": cfg.stage_hash(stage), **tags})
        log_config(cfg)
        yield run


@contextlib.contextmanager
def pipeline_run(cfg: "ExperimentConfig") -> Iterator["mlflow.ActiveRun"]:
    mlflow = setup(cfg)
    with mlflow.start_run(run_name=f"{cfg.name}/pipeline") as run:
        mlflow.set_tags({"grl_aecnn.stage": "pipeline"})
        log_config(cfg)
        yield run


def child_run_tags() -> dict[str, Any]:
    """Tags that nest a run started elsewhere (a Tune trial) under the active run."""
    import mlflow

    active = mlflow.active_run()
    return {"mlflow.parentRunId": active.info.run_id} if active else {}
