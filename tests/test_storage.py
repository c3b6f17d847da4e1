"""Runs on an object store: the storage layer against a real S3-compatible server (moto_server on
127.0.0.1), and the commands' answers when the store cannot be used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("cluster_fixtures")
from cluster_fixtures import S3Store, free_port, server_env  # noqa: E402
from grl_aecnn import storage
from grl_aecnn.cli import EXIT_CONFIG, EXIT_UNAVAILABLE
from grl_aecnn.config import load_config

pytest_plugins = ["cluster_fixtures"]


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_push_pull_remove_round_trip(s3_env: S3Store, tmp_path: Path) -> None:
    bucket = s3_env.create_bucket("roundtrip")
    cfg = load_config("tiny", [f"output_dir={bucket}/runs", "name=r1"])
    assert cfg.run_location == "s3://roundtrip/runs/r1"
    assert cfg.run_dir.is_relative_to(tmp_path / "scratch")
    stage = cfg.stage_dir("codecs")
    (stage / "tune").mkdir()
    (stage / "tune" / "a.json").write_text("{}")
    (stage / "profile.json").write_text('{"x": 1}')
    (stage / "stage.json").write_text("{}")
    storage.push_stage(cfg, "codecs")
    assert s3_env.keys("roundtrip") == ["runs/r1/codecs/profile.json", "runs/r1/codecs/stage.json",
                                        "runs/r1/codecs/tune/a.json"]
    assert storage.ray_storage_path(cfg, stage / "tune") == "s3://roundtrip/runs/r1/codecs/tune"
    storage.remove(cfg, stage / "tune")
    storage.remove(cfg, stage / "never-pushed")  # a missing folder is not an error
    assert s3_env.keys("roundtrip") == ["runs/r1/codecs/profile.json", "runs/r1/codecs/stage.json"]
    import shutil

    shutil.rmtree(cfg.run_dir)
    storage.pull(cfg)
    assert json.loads((cfg.run_dir / "codecs" / "profile.json").read_text()) == {"x": 1}
    assert not (cfg.run_dir / "codecs" / "tune").exists()


def test_local_runs_do_not_touch_the_layer(tmp_path: Path) -> None:
    cfg = load_config("tiny", [f"output_dir={tmp_path}"])
    assert cfg.run_location == str((tmp_path / "tiny").resolve())
    assert storage.remote(cfg, cfg.run_dir / "x") is None
    assert storage.ray_storage_path(cfg, cfg.run_dir / "x") == str(cfg.run_dir / "x")
    storage.pull(cfg)
    assert not cfg.run_dir.exists()


@pytest.mark.parametrize("case", ["wrong endpoint", "missing bucket", "no credentials"])
def test_unusable_store_stops_before_anything_with_exit_3(case: str, s3_store: S3Store, tmp_path: Path) -> None:
    """Without credentials moto still answers listings and some writes (anonymous access), so only
    the preflight's write probe tells; Ray Train used to fail on it with a traceback, after MLflow
    had created its store."""
    env = server_env(**s3_store.env, GRL_AECNN_SCRATCH=str(tmp_path / "scratch"),
                     MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    uri = "s3://no-such-bucket/runs"
    if case == "wrong endpoint":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
        uri = s3_store.create_bucket("endpoint-case") + "/runs"
    elif case == "no credentials":
        uri = s3_store.create_bucket("credentials-case") + "/runs"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(key, None)
        env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = str(tmp_path / "no-such-file")
    res = _cli("run", "--config", "tiny", "--set", f"output_dir={uri}", env=env, cwd=tmp_path)
    assert res.returncode == EXIT_UNAVAILABLE, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grl-aecnn: storage s3://") and uri in lines[0]
    assert ("does not exist" in lines[0]) == (case == "missing bucket")
    assert ("does not accept writes" in lines[0]) == (case == "no credentials")
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "mlflow.db").exists()
    if case != "missing bucket":
        assert s3_store.keys(uri.split("/")[2]) == []  # at most empty folder markers


def test_resume_of_a_uri_without_a_run_names_what_is_missing(s3_store: S3Store, tmp_path: Path) -> None:
    bucket = s3_store.create_bucket("resume-missing")
    env = server_env(**s3_store.env, GRL_AECNN_SCRATCH=str(tmp_path / "scratch"))
    res = _cli("resume", f"{bucket}/runs/quick", env=env, cwd=tmp_path)
    assert res.returncode == EXIT_CONFIG
    assert f"{bucket}/runs/quick: config.yaml is missing" in res.stderr
    res = _cli("resume", "s3://no-such-bucket/runs/quick", env=env, cwd=tmp_path)
    assert res.returncode == EXIT_UNAVAILABLE and "no-such-bucket" in res.stderr
    assert s3_store.keys("resume-missing") == []


def test_stage_json_holds_paths_relative_to_the_run(tmp_path: Path) -> None:
    from grl_aecnn.pipeline import MARKER, mark_finished

    cfg = load_config("tiny", [f"output_dir={tmp_path}"])
    mark_finished(cfg, "codecs", {"profile": str(cfg.run_dir / "codecs" / "profile.json"),
                                  "nested": [str(cfg.run_dir / "x")], "elsewhere": "/data/set", "n": 3}, 1.0)
    summary = json.loads((cfg.run_dir / "codecs" / MARKER).read_text())["summary"]
    assert summary == {"profile": "codecs/profile.json", "nested": ["x"], "elsewhere": "/data/set", "n": 3}


def test_resume_from_the_bucket_alone_and_missing_pieces_named(s3_env: S3Store, tmp_path: Path, mlflow_store: str,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from grl_aecnn.cli import main
    from grl_aecnn.cluster.resume import write_run_config
    from grl_aecnn.pipeline import mark_finished

    monkeypatch.chdir(tmp_path)
    bucket = s3_env.create_bucket("resume-uri")
    cfg = load_config("tiny", [f"output_dir={bucket}/runs"])
    write_run_config(cfg)
    mark_finished(cfg, "backbone", {"test_accuracy": 0.5}, 1.0)
    storage.push_stage(cfg, "backbone")
    shutil.rmtree(cfg.run_dir)  # another machine: only the bucket holds the run
    capsys.readouterr()
    assert main(["resume", f"{bucket}/runs/tiny", "--stop-after", "backbone"]) == 0
    assert f"[backbone] reusing finished stage in {bucket}/runs/tiny/backbone" in capsys.readouterr().out
    assert s3_env.keys("resume-uri") == ["runs/tiny/backbone/stage.json", "runs/tiny/config.yaml"]  # nothing retrained

    # the finished backbone stage lacks its weights: the next stage's command names the file on the store
    shutil.rmtree(cfg.run_dir)
    assert main(["run", "--config", "tiny", "--set", f"output_dir={bucket}/runs", "--stop-after", "codecs"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{bucket}/runs/tiny/backbone/model.safetensors" in err and len(err.strip().splitlines()) == 1
