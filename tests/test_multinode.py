"""The pipeline on a multi-node Ray cluster whose only shared storage is an S3 bucket, on loopback:
a head without CPUs for tasks, worker nodes with their own raylet and object store, moto's S3
server, and an `mlflow server` keeping its artifacts in the bucket. One test, because every step
needs the same (slow to start) cluster: three worker nodes (the third joins while the backbone
trains, so no step waits for a node to start); a node dies during the codec sweep and Tune
continues its trial on the idle one; the driver dies during PPO and `resume` continues from the
bucket; during the resumed PPO, with env runners on both nodes left, the node holding only an env
runner dies and RLlib trains on with the other runner until the same job finishes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.register_assert_rewrite("cluster_fixtures")
from cluster_fixtures import S3Store, alive_actors, mlflow_server, ray_head, ray_worker, server_env  # noqa: E402
from grl_aecnn.cluster import jobs
from grl_aecnn.codecs.sweep import FINISHED, PROGRESS_FILE
from grl_aecnn.rl.train import PROGRESS_FILE as PPO_PROGRESS

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
pytest_plugins = ["cluster_fixtures"]
RUN = "runs/multinode"
# Two AECNN points (a 2-CPU worker node holds one trial), one PPO policy whose trial and two env
# runners (3 CPUs) do not fit on one node. PPO checkpoints every iteration; 6 leave the resumed job
# at least two iterations after the node loss.
ITERATIONS = 6
OVERRIDES = ["name=multinode", "tracking.experiment=multinode", "codecs.train=[aecnn]", "codecs.cpus_per_trial=2",
             "policy.ppo.num_env_runners=2", "policy.ppo.num_envs_per_env_runner=1",
             f"policy.ppo.iterations={ITERATIONS}"]
MULTI_NODE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # Ray's switch for more than one node on a machine
# The head declares a killed node dead after 5 refused health checks 1 s apart (Ray's default: 3 s apart).
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}


def _wait_for(what: str, found: Callable[[], bool], client: Any, job_id: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        status = str(jobs.info(client, job_id).status)
        assert status in ("PENDING", "RUNNING"), \
            f"job ended {status} while waiting for {what}:\n{client.get_job_logs(job_id)[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _records(store: S3Store, prefix: str, name: str) -> Iterator[dict[str, Any]]:
    """The JSON files called ``name`` under ``prefix`` in the bucket, skipping any that Tune deleted
    (an older checkpoint past ``num_to_keep``) between the listing and the read."""
    missing = store.client().exceptions.NoSuchKey
    for key in store.keys("multinode", prefix):
        if key.endswith(f"/{name}"):
            try:
                yield json.loads(store.read("multinode", key))
            except missing:
                continue


def _in_training(store: S3Store, nodes: list[str], found_on: list[str]) -> Callable[[], bool]:
    """Whether a codec trial on one of ``nodes`` has checkpointed a step in the bucket but not
    finished (that node is appended to ``found_on``)."""
    def found() -> bool:
        for progress in _records(store, f"{RUN}/codecs/tune/", PROGRESS_FILE):
            if len(progress["nodes"]) == 1 and progress["nodes"][0] in nodes and progress["steps_done"] < FINISHED:
                found_on.append(progress["nodes"][0])
                return True
        return False
    return found


def _ppo_iteration(store: S3Store) -> int:
    """The newest PPO checkpoint's iteration in the bucket's Tune folder (0 when there is none)."""
    return max((p["iteration"] for p in _records(store, f"{RUN}/policies/tune/", PPO_PROGRESS)), default=0)


def _ppo_checkpoint(store: S3Store, after: int = 0) -> Callable[[], bool]:
    """Whether PPO has checkpointed an iteration past ``after`` to the bucket (the stage not finished)."""
    def found() -> bool:
        return _ppo_iteration(store) > after and not store.keys("multinode", f"{RUN}/policies/stage.json")
    return found


def _ppo_layout(actors: list[dict]) -> dict[str, list[str]]:
    """Class names of the alive actors on each node."""
    layout: dict[str, list[str]] = {}
    for actor in actors:
        layout.setdefault(actor["node_id"], []).append(actor["class_name"])
    return layout


def test_pipeline_on_worker_nodes_with_a_bucket_survives_node_and_driver_loss(s3_store: S3Store,
                                                                                tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    bucket = s3_store.create_bucket("multinode")
    s3_store.create_bucket("mlflow")

    def node(name: str) -> dict[str, str]:  # each node mirrors runs in its own scratch folder
        return {**s3_store.env, **MULTI_NODE, "GRL_AECNN_SCRATCH": str(tmp_path / f"scratch-{name}")}

    with mlflow_server(tmp_path / "mlflow", artifacts="s3://mlflow/artifacts", env=s3_store.env) as mlflow_url, \
            ray_head(num_cpus=0, env={**node("head"), **FAST_NODE_DEATH}) as head, \
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
        # a third node joins while the backbone trains: the codec trial lost later never waits for one
        with ray_worker(head, 2, node("c")) as c:
            workers = {w.node_id: w for w in (a, b, c)}
            lost_codec: list[str] = []
            _wait_for("a codec trial training", _in_training(s3_store, list(workers), lost_codec), client, job_id)
            workers[lost_codec[0]].kill_raylet()  # lost mid-trial: Tune retries that trial from its checkpoint

            # the driver is lost during PPO; `resume` continues from the bucket, in a fresh scratch folder
            _wait_for("a PPO checkpoint", _ppo_checkpoint(s3_store), client, job_id)
            client.stop_job(job_id)
            assert str(jobs.wait(client, job_id, timeout_s=120)) == "STOPPED"
            stopped_at = _ppo_iteration(s3_store)
            res = submit("--env", f"GRL_AECNN_SCRATCH={tmp_path / 'scratch-resume'}", "--", "resume", f"{bucket}/{RUN}")
            assert res.returncode == 0, res.stderr
            resumed = res.stdout.splitlines()[0]

            # the resumed PPO checkpointed with its env runners on both nodes: the node holding only an
            # env runner is lost; RLlib takes that runner out of service and trains on with the other
            _wait_for("a PPO checkpoint of the resumed job", _ppo_checkpoint(s3_store, stopped_at), client, resumed)
            layout = _ppo_layout([actor for actor in alive_actors(head) if actor["node_id"] in workers])
            runners_only = [n for n, names in layout.items() if all("EnvRunner" in name for name in names)]
            assert len([n for n, names in layout.items() if any("EnvRunner" in name for name in names)]) == 2 \
                and len(runners_only) == 1, layout
            killed_at = _ppo_iteration(s3_store)
            lost_ppo = runners_only[0]
            workers[lost_ppo].kill_raylet()
            assert ITERATIONS - killed_at >= 2, killed_at  # at least one whole iteration without that node
            status = jobs.wait(client, resumed, timeout_s=600)
            logs = client.get_job_logs(resumed)
            assert str(status) == "SUCCEEDED", logs[-4000:]
        tracking = MlflowClient(mlflow_url)
        runs = tracking.search_runs([tracking.get_experiment_by_name("multinode").experiment_id], max_results=1000)
    for stage in ("backbone", "codecs"):
        assert f"[{stage}] reusing finished stage" in logs

    def summary(stage: str) -> dict:
        return json.loads(s3_store.read("multinode", f"{RUN}/{stage}/stage.json"))["summary"]

    keys = s3_store.keys("multinode", RUN)
    for name in ("config.yaml", "backbone/model.safetensors", "codecs/profile.json", "policies/policies.json",
                 "evaluation/report.md"):
        assert f"{RUN}/{name}" in keys, name
    # the lost point continued on another node; the other one trained once, on its own node
    trial_nodes = sorted(summary("codecs")["trial_nodes"].values(), key=len)
    assert len(trial_nodes[0]) == 1 and trial_nodes[0][0] != lost_codec[0], trial_nodes
    assert lost_codec[0] in trial_nodes[1] and len(trial_nodes[1]) == 2, trial_nodes
    # PPO ran every iteration, the last ones after the node loss; its env runners ran on both nodes,
    # the lost one included
    ppo = summary("policies")["training"]["grl-aecnn"]
    assert ppo["iterations"] == ITERATIONS
    assert set(ppo["env_runner_nodes"]) == set(layout) == set(workers) - {lost_codec[0]}, (ppo, layout)
    assert lost_ppo in ppo["env_runner_nodes"]

    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    codec_runs = sorted(r.info.run_name for r in runs if (r.info.run_name or "").startswith("codec/"))
    assert codec_runs == ["codec/aecnn-k2-b2", "codec/aecnn-k2-b4"]  # the lost trial continued its own run
    artifacts = s3_store.keys("mlflow", "artifacts/")
    assert any(key.endswith("/config.yaml") for key in artifacts), "MLflow artifacts are not in the bucket"
