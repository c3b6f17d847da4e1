"""platform/: the cluster launcher YAML, the KubeRay RayJob and the runtime_env parse, hold the keys
their tools need, and agree with the code (same env defaults, a command the CLI accepts)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from grl_aecnn.cli import build_parser
from grl_aecnn.cluster.jobs import RUNTIME_ENV_FILE, job_env_vars
from grl_aecnn.config import PROJECT_ROOT, load_config

pytestmark = pytest.mark.cluster

PLATFORM = PROJECT_ROOT / "platform"


def _load(name: str) -> dict[str, Any]:
    tree = yaml.safe_load((PLATFORM / name).read_text())
    assert isinstance(tree, dict), name
    return tree


def _check_command(entrypoint: str) -> None:
    """The CLI parses the command and its config validates."""
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "grl_aecnn.cli"]
    args = build_parser().parse_args(argv[3:])
    load_config(args.config, args.overrides)


def test_no_python_package_named_platform() -> None:
    assert not (PLATFORM / "__init__.py").exists()
    assert "stdlib" in (PLATFORM / "README.md").read_text()


def test_cluster_launcher_config_is_valid_for_ray_up() -> None:
    import jsonschema
    import ray.autoscaler

    cfg = _load("cluster.yaml")
    for key in ("cluster_name", "max_workers", "provider", "head_node_type", "available_node_types",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert cfg.get(key) is not None, key
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any(t.get("max_workers", 0) > 0 for t in cfg["available_node_types"].values())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)  # the schema `ray up` checks against


def test_rayjob_manifest_runs_the_quick_pipeline() -> None:
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    _check_command(spec["entrypoint"])
    assert "run --config quick" in spec["entrypoint"]
    assert "output_dir=s3://" in spec["entrypoint"]  # a bucket, not a shared mount
    assert "persistentVolumeClaim" not in (PLATFORM / "rayjob.yaml").read_text()
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    env_vars = runtime_env["env_vars"]
    assert env_vars.pop("MLFLOW_TRACKING_URI").startswith("http")
    assert env_vars == job_env_vars()


def test_runtime_env_matches_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from grl_aecnn.runtime import RAY_ENV_DEFAULTS
    from ray.runtime_env import RuntimeEnv

    for key in RAY_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    env = yaml.safe_load(RUNTIME_ENV_FILE.read_text())
    assert set(env) == {"working_dir", "excludes", "env_vars"}
    assert env["working_dir"] == "."
    assert {".venv/", ".git/", "outputs/", "mlruns/"} <= set(env["excludes"])
    assert env["env_vars"] == job_env_vars()
    RuntimeEnv(**env)  # Ray accepts it
