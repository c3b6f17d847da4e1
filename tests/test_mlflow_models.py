"""Backbone, codec points and GRL policies as registered MLflow Models (real sqlite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from grl_aecnn.codecs.store import load_codec
from grl_aecnn.models.logged import (CHAMPION, log_backbone_model, log_codec_models, log_policy_model, set_champions,
                                     version_uri)
from grl_aecnn.policies.registry import PolicySpec, read_policies
from model_fixtures import PROFILE, SHAPE, batch, codec_blob, exported_policy, observations

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def policy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_policy(tmp_path_factory.mktemp("policy"))


def _client(store: str) -> MlflowClient:
    mlflow.set_tracking_uri(store)
    return MlflowClient(store)


def test_policy_model_loads_and_acts_without_ray(policy_folder: Path, tiny_config, mlflow_store: str,
                                                 tmp_path: Path) -> None:
    from grl_aecnn.rl.policy import load_rllib_policy

    client = _client(mlflow_store)
    observed = observations(20)
    with mlflow.start_run():
        info = log_policy_model(tiny_config, "grl-aecnn", policy_folder, batch(observed[0]),
                                {"iterations": 3, "success_rate": 0.75})
    uri = version_uri("tiny.grl-aecnn", info.registered_model_version)
    version = client.get_model_version("tiny.grl-aecnn", info.registered_model_version)
    assert version.tags["success_rate"] == "0.75" and version.tags["iterations"] == "3"
    stacked = {key: np.stack([o[key] for o in observed]) for key in observed[0]}
    np.savez(tmp_path / "obs.npz", **stacked)
    # A fresh process: load and act, and prove neither Ray nor torch-geometric was imported.
    script = (
        "import sys, numpy as np, mlflow\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        f"obs = dict(np.load({str(tmp_path / 'obs.npz')!r}))\n"
        f"np.save({str(tmp_path / 'actions.npy')!r}, model.predict(obs))\n"
        "assert not any(m == 'ray' or m.startswith(('ray.', 'torch_geometric')) for m in sys.modules), 'ray imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = load_rllib_policy(policy_folder)  # the RLModule itself
    actions = np.load(tmp_path / "actions.npy")
    assert actions.shape == (20, 16)
    assert np.array_equal(actions, np.stack([expected.act(o) for o in observed]))
    model = Model.load(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=str(tmp_path / "mlmodel")))
    assert model.signature.inputs.input_names() == list(observed[0])
    assert model.saved_input_example_info is not None


@pytest.mark.parametrize("model", ["gcn", "mlp"])
def test_ray_free_network_acts_like_the_rlmodule(model: str, tmp_path: Path) -> None:
    from grl_aecnn.models.policy_net import load_actor
    from grl_aecnn.rl.policy import load_rllib_policy

    folder = exported_policy(tmp_path, model=model, seed=3)
    actor, _ = load_actor(folder)
    observed = observations(100, seed=2)
    expected = np.stack([load_rllib_policy(folder).act(o) for o in observed])
    assert np.array_equal(actor.act({k: np.stack([o[k] for o in observed]) for k in observed[0]}), expected)


def test_codec_and_backbone_models_round_trip(tiny_config, mlflow_store: str, tmp_path: Path) -> None:
    from grl_aecnn.backbone.io import save_backbone
    from grl_aecnn.backbone.models import build_model

    client = _client(mlflow_store)
    z = torch.rand(8, *SHAPE)
    weights = {}
    for kind in ("aecnn", "bottlenetpp"):
        blob = codec_blob(kind, z)
        weights[json.loads(_spec(blob))["id"]] = tmp_path / f"{kind}.safetensors"
        weights[json.loads(_spec(blob))["id"]].write_bytes(blob)
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    meta = {"arch": "resnet18", "num_classes": 10, "class_names": [str(i) for i in range(10)], "input_size": 32,
            "dataset": "digits", "test_accuracy": 0.5}
    save_backbone(tmp_path / "backbone", model, meta)
    with mlflow.start_run():
        infos = log_codec_models(tiny_config, PROFILE, weights, z[:2].numpy())
        backbone = log_backbone_model(tiny_config, tmp_path / "backbone", meta)

    tags = client.get_model_version("tiny.codec.aecnn-k2-b4", "1").tags
    assert float(tags["accuracy"]) == next(p.accuracy for p in PROFILE.points if p.id == "aecnn-k2-b4")
    assert "bottlenetpp-c2" in infos and client.get_model_version("tiny.codec.bottlenetpp-c2", "1").tags["codec"]
    loaded = mlflow.pyfunc.load_model(infos["aecnn-k2-b4"].model_uri)
    codec, _ = load_codec(weights["aecnn-k2-b4"].read_bytes(), torch.nn.Sequential())
    sample = z[:3].numpy()
    expected = codec.restore(torch.from_numpy(np.stack([codec.decode(codec.encode(x)) for x in sample])))
    np.testing.assert_allclose(loaded.predict(sample), expected.detach().numpy(), rtol=1e-5, atol=1e-6)

    images = torch.randn(4, 3, 32, 32)
    classes = mlflow.pyfunc.load_model(backbone.model_uri).predict(images.numpy())
    assert np.array_equal(classes, model(images).argmax(1).numpy())
    assert client.get_model_version("tiny.backbone", "1").tags["test_accuracy"] == "0.5"


def _spec(blob: bytes) -> str:
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + size])["__metadata__"]["spec"]


def test_champion_follows_the_best_evaluation_reward(policy_folder: Path, tiny_config, mlflow_store: str) -> None:
    client = _client(mlflow_store)
    example = batch(observations(1)[0])
    with mlflow.start_run():
        versions = [str(log_policy_model(tiny_config, "grl-aecnn", policy_folder, example, {}).registered_model_version)
                    for _ in range(2)]
    first, second = (PolicySpec("grl-aecnn", "rllib", model=version_uri("tiny.grl-aecnn", v)) for v in versions)
    assert set_champions([first], {"grl-aecnn": {"reward": 1.0, "accuracy": 0.9}}) == {"tiny.grl-aecnn": versions[0]}
    assert set_champions([second], {"grl-aecnn": {"reward": 0.5, "accuracy": 0.8}}) == {}
    assert str(client.get_model_version_by_alias("tiny.grl-aecnn", CHAMPION).version) == versions[0]
    assert client.get_model_version("tiny.grl-aecnn", versions[1]).tags["eval.reward"] == "0.5"
    set_champions([second], {"grl-aecnn": {"reward": 2.0, "accuracy": 0.95}})
    assert str(client.get_model_version_by_alias("tiny.grl-aecnn", CHAMPION).version) == versions[1]


def test_read_policies_takes_an_index_its_folder_or_one_policy(policy_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "grl-aecnn").symlink_to(policy_folder, target_is_directory=True)
    (tmp_path / "policies.json").write_text(json.dumps(
        {"grl-aecnn": {"kind": "rllib", "path": "grl-aecnn", "codecs": ["aecnn"], "model": "models:/t.grl-aecnn/1"}}))
    from_index = read_policies(tmp_path)
    assert from_index == read_policies(tmp_path / "policies.json")
    assert from_index[0].path == str(tmp_path / "grl-aecnn") and from_index[0].model == "models:/t.grl-aecnn/1"
    one = read_policies(policy_folder, model="models:/t.grl-aecnn@champion")
    assert [(s.name, s.kind, s.codecs, s.model) for s in one] == [
        ("grl-aecnn", "rllib", ["aecnn"], "models:/t.grl-aecnn@champion")]
