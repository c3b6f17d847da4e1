"""Shared fixtures: one local Ray per test session, throw-away MLflow stores and outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grl_aecnn.runtime import configure_process

configure_process()


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs, small object store), shared by the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024 * 1024,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store for one test; returns its URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # The fluent API remembers the active experiment across tests: point it at this store's own.
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("Default")
    return uri


@pytest.fixture()
def tiny_config(tmp_path: Path, mlflow_store: str):
    """A config on scikit-learn digits, small enough to train in seconds, writing under tmp_path."""
    from grl_aecnn.config import load_config

    return load_config("quick", [
        "name=tiny",
        f"output_dir={tmp_path / 'outputs'}",
        "data.dataset=digits",
        "data.input_size=32",
        "backbone.epochs=1",
        "backbone.batch_size=64",
        "codecs.seeds=1",
        "ray.num_cpus=2",
    ])


def fashion_mnist_available() -> bool:
    return Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")).exists()


@pytest.fixture(scope="module")
def split_data():
    """Random ResNet-18 stem split tensors with the tail and labels (codec and ablation tests)."""
    from model_fixtures import random_split_data

    return random_split_data()
