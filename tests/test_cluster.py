"""Jobs on a real `ray start --head` (127.0.0.1) through `grl-aecnn submit/jobs`, and `resume`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

pytest.register_assert_rewrite("cluster_fixtures")  # also loaded as a plugin below
from cluster_fixtures import RayHead, ray_head, server_env  # noqa: E402
from grl_aecnn.cli import EXIT_CONFIG, main
from grl_aecnn.cluster import jobs
from grl_aecnn.cluster.resume import RUN_CONFIG, write_run_config
from grl_aecnn.config import PROJECT_ROOT, load_config
from grl_aecnn.pipeline import mark_finished

pytestmark = pytest.mark.cluster
# One `mlflow server` for the whole session (fixture `mlflow_server_url`).
pytest_plugins = ["cluster_fixtures"]


def _cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """The real command in its own process (what a user runs)."""
    return subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same command in this process: saves a torch import per call on a busy machine."""
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=2) as cluster:
        yield cluster


def test_submit_without_address_says_what_to_set(tmp_path: Path) -> None:
    res = _cli("submit", "--", "config", "show", env=server_env(), cwd=tmp_path)
    assert res.returncode == EXIT_CONFIG
    assert "RAY_ADDRESS=http://HEAD:8265" in res.stderr and "--address" in res.stderr


def test_submit_rejects_bad_commands_before_sending(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")  # never contacted
    rc, _, err = _main(capsys, "submit", "--", "run", "--set", "backbone.lr=-1")
    assert rc == EXIT_CONFIG and "backbone.lr" in err
    outside = tmp_path / "mine.yaml"
    outside.write_text("name: mine\n")
    rc, _, err = _main(capsys, "submit", "--", "run", "--config", str(outside))
    assert rc == EXIT_CONFIG and "outside the project" in err
    rc, _, err = _main(capsys, "submit", "--", "jobs", "list")
    assert rc == EXIT_CONFIG and "cannot run as a job" in err
    rc, _, err = _main(capsys, "jobs", "list", "--address", "127.0.0.1:6379")
    assert rc == EXIT_CONFIG and "dashboard address" in err


def test_runtime_env_ships_the_project_not_the_venv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = jobs.runtime_env({"EXTRA": "1"}, {"pip": ["tqdm"], "excludes": ["bench/"]})
    assert env["working_dir"] == str(PROJECT_ROOT)
    assert {".venv/", ".git/", "outputs/", "mlruns/", "bench/"} <= set(env["excludes"])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["env_vars"]["EXTRA"] == "1" and env["pip"] == ["tqdm"]
    assert "RAY_AUTH_MODE" not in env["env_vars"]  # the cluster decides its own auth


def test_jobs_run_report_and_fail_visibly(head: RayHead, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env = server_env(RAY_ADDRESS=head.dashboard_url)
    res = _cli("submit", "--follow", "--", "config", "show", "--set", "backbone.epochs=7", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "epochs: 7" in res.stdout  # streamed logs

    monkeypatch.setenv("RAY_ADDRESS", head.dashboard_url)
    rc, out, _ = _main(capsys, "jobs", "list")
    assert rc == 0
    line = next(li for li in out.splitlines() if li.startswith(job_id))
    assert "SUCCEEDED" in line and "config show --set backbone.epochs=7" in line
    rc, out, _ = _main(capsys, "jobs", "status", job_id)
    assert rc == 0 and "SUCCEEDED" in out
    rc, out, _ = _main(capsys, "jobs", "logs", job_id)
    assert rc == 0 and "epochs: 7" in out
    rc, out, _ = _main(capsys, "jobs", "stop", job_id)
    assert rc == 0 and "not running" in out
    rc, _, err = _main(capsys, "jobs", "status", "raysubmit_unknown")
    assert rc == 3 and "raysubmit_unknown" in err

    # a job that fails on the cluster: submit --follow exits 1 and says why
    rc, out, err = _main(capsys, "submit", "--follow", "--", "resume", str(tmp_path / "no-such-run"))
    assert rc == 1
    assert "no run to resume" in out and "FAILED" in err

    # a running job stopped from the CLI ends STOPPED, and following it exits 1
    rc, out, _ = _main(capsys, "submit", "--", "train-backbone", "--set", "data.dataset=digits",
                       "--set", "backbone.epochs=50", "--set", f"output_dir={tmp_path / 'stopped'}")
    assert rc == 0
    job_id = out.splitlines()[0]
    client = jobs.connect(head.dashboard_url)
    while str(jobs.info(client, job_id).status) == "PENDING":
        time.sleep(0.5)
    rc, out, _ = _main(capsys, "jobs", "stop", job_id)
    assert rc == 0 and "stopping" in out
    assert str(jobs.wait(client, job_id, timeout_s=60)) == "STOPPED"
    rc, _, err = _main(capsys, "jobs", "logs", "--follow", job_id)
    assert rc == 1 and "STOPPED" in err


def test_pipeline_job_lands_in_the_tracking_server(head: RayHead, mlflow_server_url: str,
                                                    tmp_path: Path) -> None:
    """The whole tiny pipeline as a Ray Job: every stage a FINISHED run on a real mlflow server,
    the report written; run again locally, every finished stage is reused."""
    from mlflow.tracking import MlflowClient

    env = server_env(RAY_ADDRESS=head.dashboard_url, MLFLOW_TRACKING_URI=mlflow_server_url)
    out = tmp_path / "outputs"
    overrides = ["--set", f"output_dir={out}", "--set", "name=jobtest", "--set", "tracking.experiment=jobtest"]
    res = _cli("submit", "--follow", "--", "run", "--config", "tiny", *overrides, env=env, cwd=tmp_path,
               timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = out / "jobtest"
    for stage in ("backbone", "codecs", "policies", "evaluation"):
        assert json.loads((run_dir / stage / "stage.json").read_text())["summary"], stage
    report = (run_dir / "evaluation" / "report.md").read_text()
    assert all(name in report for name in ("oracle", "grl-aecnn", "grl-bottlenetpp", "grl-deepjscc", "droo-aecnn"))
    client = MlflowClient(mlflow_server_url)
    runs = client.search_runs([client.get_experiment_by_name("jobtest").experiment_id])
    by_stage = {r.data.tags.get("grl_aecnn.stage"): r for r in runs}
    parent = by_stage["pipeline"]
    for stage in ("backbone", "codecs", "policies", "evaluation"):
        assert by_stage[stage].info.status == "FINISHED", stage
        assert by_stage[stage].data.tags["mlflow.parentRunId"] == parent.info.run_id
    recorded = json.loads((run_dir / "backbone" / "stage.json").read_text())["summary"]["test_accuracy"]
    assert by_stage["backbone"].data.metrics["test_accuracy"] == pytest.approx(recorded)  # the stage's own number
    assert by_stage["backbone"].data.params["data.dataset"] == "digits"

    local_env = server_env(MLFLOW_TRACKING_URI=mlflow_server_url)
    again = _cli("run", "--config", "tiny", *overrides, env=local_env, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("backbone", "codecs", "policies", "evaluation"):
        assert f"[{stage}] reusing finished stage" in again.stdout


def test_resume_finds_a_moved_run_and_reuses_finished_stages(tmp_path: Path, mlflow_store: str,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the sqlite store keeps its artifacts under ./mlruns
    cfg = load_config("quick", ["name=moved", f"output_dir={tmp_path / 'a'}", "data.dataset=digits"])
    write_run_config(cfg)
    mark_finished(cfg, "backbone", {"test_accuracy": 0.5}, 1.0)
    assert yaml.safe_load((cfg.run_dir / RUN_CONFIG).read_text())["output_dir"] == str(tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    for target in ([str(tmp_path / "b" / "moved")], ["moved", "--output-dir", str(tmp_path / "b")]):
        rc, out, err = _main(capsys, "resume", *target, "--stop-after", "backbone")
        assert rc == 0, err
        assert f"[backbone] reusing finished stage in {tmp_path / 'b' / 'moved' / 'backbone'}" in out
    rc, _, err = _main(capsys, "resume", str(tmp_path / "nothing-here"))
    assert rc == EXIT_CONFIG and "no run to resume" in err
    assert os.listdir(tmp_path / "b" / "moved" / "backbone") == ["stage.json"]  # nothing retrained
