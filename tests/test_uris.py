"""Paths, MLflow run ids, runs:/ and models:/ URIs as command inputs (real sqlite store and CLI)."""

from __future__ import annotations

import socket
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from grl_aecnn.cli import main
from grl_aecnn.config import dump_config
from grl_aecnn.models.logged import CHAMPION, log_codec_models, log_policy_model
from grl_aecnn.uris import InputError, fetch, fetch_run_config, single
from model_fixtures import PROFILE, PROFILE_PATH, SHAPE, batch, codec_blob, exported_policy, observations


@pytest.fixture(scope="module")
def policy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture()
def run_id(mlflow_store: str, tiny_config) -> str:
    """A run holding a profile and a config, as the pipeline's stage runs do."""
    mlflow.set_tracking_uri(mlflow_store)
    with mlflow.start_run() as run:
        mlflow.log_text(PROFILE_PATH.read_text(), "profile.json")
        mlflow.log_text(dump_config(tiny_config), "config.yaml")
    return run.info.run_id


def test_local_paths_pass_unchanged_and_missing_ones_are_named(tmp_path: Path) -> None:
    assert fetch(str(PROFILE_PATH), tmp_path / "in", "--profile", "profile.json") == PROFILE_PATH
    missing = fetch(str(tmp_path / "nope"), tmp_path / "in", "--init-from", "policies")  # its reader names it
    with pytest.raises(InputError, match=r"--init-from: .*nope not found"):
        single(missing, "policy.json", "--init-from")
    assert not (tmp_path / "in").exists()


def test_run_id_and_runs_uri_download_into_the_run_folder(run_id: str, tmp_path: Path) -> None:
    dest = tmp_path / "run" / "inputs"
    by_id = fetch(run_id, dest, "--profile", "profile.json")
    by_uri = fetch(f"runs:/{run_id}/profile.json", dest, "--profile", "profile.json")
    assert by_id.read_bytes() == by_uri.read_bytes() == PROFILE_PATH.read_bytes()
    assert by_uri.is_relative_to(dest) and by_id.is_relative_to(dest) and by_id != by_uri
    config = fetch(f"runs:/{run_id}/config.yaml", dest, "--profile", "profile.json")
    with pytest.raises(InputError, match="holds 0 files matching profile.json"):
        single(config.parent, "profile.json", "--profile")


def test_bad_references_leave_nothing_behind(run_id: str, tiny_config, tmp_path: Path) -> None:
    dest = tmp_path / "inputs"
    with pytest.raises(InputError, match=f"--profile: {'0' * 32} not found on the tracking server"):
        fetch("0" * 32, dest, "--profile", "profile.json")
    with pytest.raises(InputError, match="artifact runs:/.*/missing.json failed to download"):
        fetch(f"runs:/{run_id}/missing.json", dest, "--profile", "profile.json")
    with pytest.raises(InputError, match="models:/nope@champion not found"):
        fetch("models:/nope@champion", dest, "--policies", "policies", kind="policy")
    with pytest.raises(InputError, match="is a model; this option takes a path"):
        fetch("models:/nope@champion", dest, "--profile", "profile.json")
    z = torch.rand(4, *SHAPE)
    (tmp_path / "codec.safetensors").write_bytes(codec_blob("aecnn", z))
    with mlflow.start_run():
        log_codec_models(tiny_config, PROFILE, {"aecnn-k2-b4": tmp_path / "codec.safetensors"}, z[:1].numpy())
        mlflow.pyfunc.log_model(name="other", python_model=_echo, input_example=["a"], registered_model_name="other")
    with pytest.raises(InputError, match="not a grl-aecnn policy model .*kind 'codec'"):
        fetch("models:/tiny.codec.aecnn-k2-b4/1", dest, "--policies", "policies", kind="policy")
    with pytest.raises(InputError, match="not a grl-aecnn policy model .*loader 'mlflow.pyfunc.model', kind None"):
        fetch("models:/other/1", dest, "--policies", "policies", kind="policy")
    assert not dest.exists()


def _echo(model_input: list[str]) -> list[str]:
    return model_input


def test_policy_model_alias_resolves_to_its_policy_folder(policy_folder: Path, tiny_config, mlflow_store: str,
                                                          tmp_path: Path) -> None:
    mlflow.set_tracking_uri(mlflow_store)
    with mlflow.start_run():
        info = log_policy_model(tiny_config, "grl-aecnn", policy_folder, batch(observations(1)[0]), {})
    mlflow.MlflowClient().set_registered_model_alias("tiny.grl-aecnn", CHAMPION, info.registered_model_version)
    data = fetch("models:/tiny.grl-aecnn@champion", tmp_path / "inputs", "--init-from", "policies", kind="policy")
    folder = single(data, "policy.json", "--init-from").parent
    assert (folder / "module.safetensors").read_bytes() == (policy_folder / "module.safetensors").read_bytes()


def test_resume_takes_a_run_id(run_id: str, tmp_path: Path) -> None:
    run_dir = fetch_run_config(run_id, tmp_path / "outputs")
    assert run_dir == (tmp_path / "outputs" / "tiny").resolve() and (run_dir / "config.yaml").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_bad_input_exits_2_unreachable_exits_3_and_creates_nothing(
        tmp_path: Path, mlflow_store: str, policy_folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "outputs"
    common = ["--config", "tiny", "--set", f"output_dir={out}"]
    assert main(["evaluate", *common, "--profile", "f" * 32]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("grl-aecnn")]
    assert len(ours) == 1 and f"--profile: {'f' * 32} not found" in ours[0]
    # tiny trains hidden=8; the fixture policy has hidden=16
    assert main(["train-policy", *common, "--init-from", str(policy_folder)]) == 2
    assert "policy.ppo.hidden=16" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    assert main(["evaluate", *common, "--profile", f"runs:/{'f' * 32}/profile.json"]) == 3
    assert "not reachable" in capsys.readouterr().err
    assert not out.exists()
    assert np.all([not p.name.startswith("grl-aecnn-fetch-") for p in Path(tmp_path).iterdir()])
