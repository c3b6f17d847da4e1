"""The pipeline on a multi-node Ray cluster whose only shared storage is an S3 bucket, on loopback:
a head without CPUs for tasks, worker nodes with their own raylet and object store, moto's S3
server, and an `mlflow server` keeping its artifacts in the bucket. One test, because every step
needs the same (slow to start) cluster: a worker node dies during the codec sweep, a replacement
joins, PPO spreads its env runners over the nodes left, the driver dies during PPO and `resume`
continues from the bucket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.register_assert_rewrite("cluster_fixtures")
from cluster_fixtures import S3Store, mlflow_server, ray_head, ray_worker, server_env  # noqa: E402
from grl_aecnn.cluster import jobs
from grl_aecnn.codecs.sweep import FINISHED, PROGRESS_FILE

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
pytest_plugins = ["cluster_fixtures"]
RUN = "runs/multinode"
# Two AECNN points (a 2-CPU worker node holds one trial), one PPO policy whose trial and two env
# runners (3 CPUs) do not fit on one node.
OVERRIDES = ["name=multinode", "tracking.experiment=multinode", "codecs.train=[aecnn]", "codecs.cpus_per_trial=2",
             "policy.ppo.num_env_runners=2", "policy.ppo.num_envs_per_env_runner=1", "policy.ppo.iterations=4"]
MULTI_NODE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # Ray's switch for more than one node on a machine


def _wait_for(what: str, found: Callable[[], bool], client: Any, job_id: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        status = str(jobs.info(client, job_id).status)
        assert status in ("PENDING", "RUNNING"), \
            f"job ended {status} while waiting for {what}:\n{client.get_job_logs(job_id)[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _in_training(store: S3Store, node: str) -> Callable[[], bool]:
    """Whether a codec trial on ``node`` has checkpointed a step in the bucket but not finished."""
    def found() -> bool:
        for key in store.keys("multinode", f"{RUN}/codecs/tune/"):
            if key.endswith(f"/{PROGRESS_FILE}"):
                progress = json.loads(store.read("multinode", key))
                if progress["nodes"] == [node] and progress["steps_done"] < FINISHED:
                    return True
        return False
    return found


def _ppo_checkpoint(store: S3Store) -> Callable[[], bool]:
    """Whether PPO has checkpointed to the bucket (and the policies stage is not finished)."""
    def found() -> bool:
        keys = store.keys("multinode", f"{RUN}/policies/")
        return any("/checkpoint_" in key for key in keys) and f"{RUN}/policies/stage.json" not in keys
    return found


def test_pipeline_on_worker_nodes_with_a_bucket_survives_node_and_driver_loss(s3_store: S3Store,
                                                                                tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    bucket = s3_store.create_bucket("multinode")
    s3_store.create_bucket("mlflow")

    def node(name: str) -> dict[str, str]:  # each node mirrors runs in its own scratch folder
        return {**s3_store.env, **MULTI_NODE, "GRL_AECNN_SCRATCH": str(tmp_path / f"scratch-{name}")}

    with mlflow_server(tmp_path / "mlflow", artifacts="s3://mlflow/artifacts", env=s3_store.env) as mlflow_url, \
            ray_head(num_cpus=0, env=node("head")) as head, \
            ray_worker(head, 2, node("a")) as a, ray_worker(head, 2, node("b")) as b:
        env = server_env(**s3_store.env, RAY_ADDRESS=head.dashboard_url, MLFLOW_TRACKING_URI=mlflow_url)

        def submit(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "grl_aecnn.cli", "submit", *args], env=env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=900)

        res = submit("--", "run", "--config", "tiny", "--set", f"output_dir={bucket}/runs",
                     *[arg for item in OVERRIDES for arg in ("--set", item)])
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.splitlines()[0]
        client = jobs.connect(head.dashboard_url)

        _wait_for("a codec trial training on the first node", _in_training(s3_store, a.node_id), client, job_id)
        a.kill_raylet()  # the node is lost mid-trial: Tune retries that trial from its checkpoint
        with ray_worker(head, 2, node("c")) as c:  # a replacement joins: PPO needs 3 CPUs
            # the driver is lost during PPO; `resume` continues from the bucket, in a fresh scratch folder
            _wait_for("a PPO checkpoint", _ppo_checkpoint(s3_store), client, job_id)
            client.stop_job(job_id)
            assert str(jobs.wait(client, job_id, timeout_s=120)) == "STOPPED"
            res = submit("--follow", "--env", f"GRL_AECNN_SCRATCH={tmp_path / 'scratch-resume'}", "--",
                         "resume", f"{bucket}/{RUN}")
            assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        tracking = MlflowClient(mlflow_url)
        runs = tracking.search_runs([tracking.get_experiment_by_name("multinode").experiment_id], max_results=1000)
    for stage in ("backbone", "codecs"):
        assert f"[{stage}] reusing finished stage" in res.stdout

    def summary(stage: str) -> dict:
        return json.loads(s3_store.read("multinode", f"{RUN}/{stage}/stage.json"))["summary"]

    keys = s3_store.keys("multinode", RUN)
    for name in ("config.yaml", "backbone/model.safetensors", "codecs/profile.json", "policies/policies.json",
                 "evaluation/report.md"):
        assert f"{RUN}/{name}" in keys, name
    # the lost point continued on another node; the other one trained once, on its own node
    trial_nodes = sorted(summary("codecs")["trial_nodes"].values(), key=len)
    assert trial_nodes[0] == [b.node_id] and a.node_id in trial_nodes[1] and len(trial_nodes[1]) == 2, trial_nodes
    runner_nodes = set(summary("policies")["training"]["grl-aecnn"]["env_runner_nodes"])
    assert runner_nodes == {b.node_id, c.node_id}

    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    codec_runs = sorted(r.info.run_name for r in runs if (r.info.run_name or "").startswith("codec/"))
    assert codec_runs == ["codec/aecnn-k2-b2", "codec/aecnn-k2-b4"]  # the lost trial continued its own run
    artifacts = s3_store.keys("mlflow", "artifacts/")
    assert any(key.endswith("/config.yaml") for key in artifacts), "MLflow artifacts are not in the bucket"
