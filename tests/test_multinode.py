"""The pipeline on a multi-node Ray cluster whose only shared storage is an S3 bucket, on loopback:
a head without CPUs for tasks, worker nodes with their own raylet and object store, moto's S3
server, and an `mlflow server` keeping its artifacts in the bucket. One test, because every
step needs the same (slow to start) cluster: node loss in the codec sweep and in PPO, then the
driver's loss and `resume` from the bucket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

pytest.register_assert_rewrite("cluster_fixtures")
from cluster_fixtures import RayWorker, S3Store, mlflow_server, ray_head, ray_worker, server_env  # noqa: E402
from grl_aecnn.cluster import jobs

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
pytest_plugins = ["cluster_fixtures"]
RUN = "runs/multinode"
# Two AECNN points (one trial per worker node), one PPO policy with an env runner per node.
OVERRIDES = ["name=multinode", "tracking.experiment=multinode", "codecs.train=[aecnn]",
             "codecs.cpus_per_trial=2", "policy.ppo.num_env_runners=2", "policy.ppo.iterations=4",
             "policy.ppo.num_envs_per_env_runner=1"]


def _wait_for(what: str, found: Callable[[], bool], job: Callable[[], str], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        status = job()
        assert status in ("PENDING", "RUNNING"), f"job ended {status} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def _processes(worker: RayWorker) -> list[str]:
    from cluster_fixtures import _session_tree

    names = []
    for proc in _session_tree(worker.proc.pid):
        try:
            names.append(" ".join(proc.cmdline()))
        except Exception:  # noqa: BLE001 - a process that just ended
            continue
    return names


def _runner_only(nodes: list[RayWorker]) -> RayWorker:
    """The node that holds an env runner but not the PPO trial itself."""
    for _ in range(120):
        for node in nodes:
            names = _processes(node)
            if any("EnvRunner" in n for n in names) and not any("SignedPPO" in n for n in names):
                return node
        time.sleep(1)
    pytest.fail("no node holds only an env runner")


def test_pipeline_on_worker_nodes_with_a_bucket_survives_node_and_driver_loss(
        s3_store: S3Store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    bucket = s3_store.create_bucket("multinode")
    s3_store.create_bucket("mlflow")
    node_env = {**s3_store.env, "GRL_AECNN_SCRATCH": str(tmp_path / "scratch-1")}
    with mlflow_server(tmp_path / "mlflow", artifacts="s3://mlflow/artifacts", env=s3_store.env) as mlflow_url, \
            ray_head(num_cpus=0, env=node_env) as head, \
            ray_worker(head, 2, node_env) as a, ray_worker(head, 2, node_env) as b:
        env = server_env(**s3_store.env, RAY_ADDRESS=head.dashboard_url, MLFLOW_TRACKING_URI=mlflow_url)

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *args], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=1800)

        sets = [arg for item in [f"output_dir={bucket}/runs", *OVERRIDES] for arg in ("--set", item)]
        res = cli("submit", "--", "run", "--config", "tiny", *sets)
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.splitlines()[0]
        client = jobs.connect(head.dashboard_url)

        def status(job: str = job_id) -> str:
            return str(jobs.info(client, job).status)

        def has(prefix: str, part: str = "") -> Callable[[], bool]:
            return lambda: any(part in key for key in s3_store.keys("multinode", f"{RUN}/{prefix}"))

        # a worker node dies during the codec sweep, once a trial has checkpointed to the bucket
        _wait_for("a codec checkpoint", has("codecs/tune/", "checkpoint_"), status)
        a.kill_raylet()
        with ray_worker(head, 2, node_env) as c:  # a replacement joins; PPO needs 3 CPUs
            # a node holding an env runner dies during PPO
            _wait_for("a PPO checkpoint", has("policies/tune/ppo/", "checkpoint_"), status)
            lost = _runner_only([b, c])
            lost.kill_raylet()
            # the driver dies; resume continues from the bucket, with a new scratch folder
            _wait_for("two PPO checkpoints", lambda: len({k.split("/checkpoint_")[1].split("/")[0] for k in
                      s3_store.keys("multinode", f"{RUN}/policies/tune/ppo/") if "/checkpoint_" in k}) >= 2, status)
            assert not has("policies/stage.json")()
            rc = cli("jobs", "stop", job_id)
            assert rc.returncode == 0, rc.stderr
            assert str(jobs.wait(client, job_id, timeout_s=120)) == "STOPPED"
            res = cli("submit", "--follow", "--env", f"GRL_AECNN_SCRATCH={tmp_path / 'scratch-2'}", "--",
                      "resume", f"{bucket}/{RUN}")
            assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        for stage in ("backbone", "codecs"):
            assert f"[{stage}] reusing finished stage" in res.stdout

        def stage_summary(stage: str) -> dict:
            return json.loads(s3_store.read("multinode", f"{RUN}/{stage}/stage.json"))["summary"]

        keys = s3_store.keys("multinode", RUN)
        for name in ("config.yaml", "backbone/model.safetensors", "codecs/profile.json", "policies/policies.json",
                     "evaluation/report.md"):
            assert f"{RUN}/{name}" in keys, name
        trial_nodes = stage_summary("codecs")["trial_nodes"]
        assert {a.node_id, b.node_id} <= {node for nodes in trial_nodes.values() for node in nodes}
        runner_nodes = set(stage_summary("policies")["training"]["grl-aecnn"]["env_runner_nodes"])
        assert {b.node_id, c.node_id} <= runner_nodes

        tracking = MlflowClient(mlflow_url)
        experiment = tracking.get_experiment_by_name("multinode").experiment_id
        runs = tracking.search_runs([experiment], max_results=1000)
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        codec_runs = [r for r in runs if (r.info.run_name or "").startswith("codec/")]
        assert sorted(r.info.run_name for r in codec_runs) == ["codec/aecnn-k2-b2", "codec/aecnn-k2-b4"]
        assert all(r.info.status == "FINISHED" for r in codec_runs)  # the lost trial continued its own run
        assert s3_store.keys("mlflow", "artifacts/"), "MLflow artifacts are not in the bucket"
        assert any(key.endswith("/config.yaml") for key in s3_store.keys("mlflow", "artifacts/"))
