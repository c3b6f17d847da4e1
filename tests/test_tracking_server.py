"""A real `mlflow server` on 127.0.0.1: runs logged over HTTP read back, dead servers stop commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grl_aecnn import tracking
from grl_aecnn.cli import EXIT_UNAVAILABLE
from grl_aecnn.config import load_config
pytest.register_assert_rewrite("cluster_fixtures")  # also loaded as a plugin below
from cluster_fixtures import free_port  # noqa: E402

pytestmark = pytest.mark.cluster
# One `mlflow server` for the whole session (fixture `mlflow_server_url`).
pytest_plugins = ["cluster_fixtures"]


def test_run_logged_over_http_reads_back(mlflow_server_url: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
    monkeypatch.chdir(tmp_path)
    tracking.check_reachable(mlflow_server_url)
    cfg = load_config("quick", ["name=http", f"output_dir={tmp_path}", "tracking.experiment=http-test"])
    note = tmp_path / "note.txt"
    note.write_text("served by the tracking server")
    with tracking.pipeline_run(cfg) as parent:
        with tracking.stage_run(cfg, "backbone") as child:
            for epoch, acc in enumerate([0.5, 0.75]):
                mlflow.log_metric("val_accuracy", acc, step=epoch)
            mlflow.log_artifact(str(note))
    client = MlflowClient(mlflow_server_url)
    run = client.get_run(child.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.params["backbone.arch"] == "resnet18"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0.5, 0.75]
    # artifacts go through the server (mlflow-artifacts:), not to a local path
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"note.txt", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    local = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
    assert Path(local).read_text() == "served by the tracking server"
    assert not (tmp_path / "mlruns").exists()


def _cli_with_dead_tracking(tmp_path: Path, extra_env: dict[str, str], *args: str
                            ) -> subprocess.CompletedProcess:
    """Run the CLI with MLFLOW_TRACKING_URI on a port nobody serves; check it says so, exit 3."""
    uri = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, **extra_env}
    res = subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == EXIT_UNAVAILABLE, res.stderr
    assert f"MLflow tracking server {uri} is not reachable" in res.stderr
    return res


def test_dead_tracking_server_stops_train_backbone_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    res = _cli_with_dead_tracking(tmp_path, {}, "train-backbone", "--config", "quick",
                                  "--set", f"output_dir={tmp_path / 'outputs'}")
    assert "Traceback" not in res.stderr
    assert time.monotonic() - start < 60
    assert list(tmp_path.iterdir()) == []  # no outputs, no local mlruns


def test_dead_tracking_server_stops_submit_before_the_cluster_is_contacted(tmp_path: Path) -> None:
    res = _cli_with_dead_tracking(tmp_path, {"RAY_ADDRESS": f"http://127.0.0.1:{free_port()}"},
                                  "submit", "--", "train-backbone", "--set", f"output_dir={tmp_path / 'outputs'}")
    assert "Ray cluster" not in res.stderr
