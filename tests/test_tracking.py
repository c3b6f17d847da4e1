"""MLflow tracking: the embedded store, nested stage runs, the resolved config as params."""

from __future__ import annotations

from pathlib import Path

import pytest

from grl_aecnn import tracking
from grl_aecnn.config import load_config


def test_default_store_is_sqlite_under_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:1")
    assert tracking.tracking_uri() == "http://example.invalid:1"
    cfg = load_config("quick", ["tracking.tracking_uri=sqlite:////x.db"])
    assert tracking.tracking_uri(cfg) == "sqlite:////x.db"


def test_stage_runs_nest_under_the_pipeline_run(tmp_path: Path, mlflow_store: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    cfg = load_config("quick", ["name=nest", f"output_dir={tmp_path}"])
    with tracking.pipeline_run(cfg) as parent:
        with tracking.stage_run(cfg, "backbone") as child:
            import mlflow

            mlflow.log_metric("val_accuracy", 0.5, step=1)
            child_id = child.info.run_id
    client = MlflowClient(mlflow_store)
    run = client.get_run(child_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["grl_aecnn.stage"] == "backbone"
    assert run.data.tags["grl_aecnn.config_hash"] == cfg.stage_hash("backbone")
    assert run.data.params["backbone.arch"] == "resnet18"
    assert run.data.metrics["val_accuracy"] == 0.5
    assert run.info.status == "FINISHED"
    assert "config.yaml" in {a.path for a in client.list_artifacts(child_id)}


def test_check_reachable_ignores_local_stores_and_names_dead_servers() -> None:
    tracking.check_reachable("sqlite:////tmp/x.db")
    with pytest.raises(tracking.TrackingUnavailable, match="not reachable"):
        tracking.check_reachable("http://127.0.0.1:9", timeout_s=1)
