"""Exact resume: a PPO training killed (SIGKILL) after a checkpoint and before Tune's next
state write continues from that checkpoint, in the same MLflow runs, ignoring planted pickles;
runs left RUNNING are closed as KILLED; a reused stage links to the run that produced it."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from grl_aecnn import tracking, trust
from grl_aecnn.config import load_config
from grl_aecnn.rl.train import EXPERIMENT, KEPT, PROGRESS_FILE
from tests.test_network import stop_cluster
from tests.test_ppo import PROFILE_PATH, TINY
from tests.test_trust import plant

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 5
TRAIN = f"""
import json, sys
from grl_aecnn import tracking
from grl_aecnn.config import load_config
from grl_aecnn.profile import load_profile
from grl_aecnn.rl.train import PolicyRun, train_ppo
from grl_aecnn.runtime import init_ray

cfg = load_config("quick", json.loads(sys.argv[1]))
resume = sys.argv[2] == "resume"
if resume:
    tracking.close_killed_runs(cfg)
init_ray(cfg)
with tracking.stage_run(cfg, "policies"):
    done = train_ppo(cfg, load_profile({str(PROFILE_PATH)!r}), [PolicyRun("grl-aecnn", ("aecnn",))],
                     cfg.stage_dir("policies"), resume)
print("ITERATIONS", done["grl-aecnn"].iterations)
"""


def _signed_iterations(folder: Path) -> list[int]:
    """Iterations of the complete (signed) checkpoints of the policy under ``folder``."""
    return sorted(json.loads((c / PROGRESS_FILE).read_text())["iteration"]
                  for c in folder.glob("**/checkpoint_*") if (c / trust.SIGNATURE).exists())


@pytest.fixture()
def ray_tmp():
    folder = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths are limited
    yield folder
    stop_cluster(folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_ppo_killed_after_a_checkpoint_resumes_from_it(tmp_path: Path, ray_tmp: str) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [*TINY, f"policy.ppo.iterations={ITERATIONS}", f"output_dir={tmp_path / 'out'}",
                 f"tracking.tracking_uri={uri}", "ray.num_cpus=1"]
    cfg = load_config("quick", overrides)
    out = cfg.stage_dir("policies")
    env = {**os.environ, "PYTHONPATH": str(ROOT), trust.KEY_ENV: str(tmp_path / "key"),
           "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-c", TRAIN, json.dumps(overrides)]

    first = subprocess.Popen([*command, "fresh"], env=env, cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not any(i >= 2 for i in _signed_iterations(out / "tune")) and time.monotonic() < deadline:
            assert first.poll() is None, "training ended before it could be killed"
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
        first.wait()
    kept = max(_signed_iterations(out / "tune"))
    assert 2 <= kept < ITERATIONS

    # What Tune knew is gone (as if it had not written its state since the checkpoint), and
    # pickles are planted where Tune and RLlib would load them: a tuner, and a forged newer
    # checkpoint whose signature was copied from a real one.
    experiment = out / "tune" / EXPERIMENT
    for state in experiment.glob("experiment_state*.json"):
        state.unlink()
    marker = tmp_path / "marker"
    plant(experiment, ["tuner.pkl", "trainable.pkl"], marker)
    real = next(c for c in (experiment / "grl-aecnn").glob("checkpoint_*") if (c / trust.SIGNATURE).exists())
    forged = experiment / "grl-aecnn" / "checkpoint_000099"
    plant(forged, ["algorithm_state.pkl", "class_and_ctor_args.pkl"], marker)
    progress = json.loads((real / PROGRESS_FILE).read_text())
    (forged / PROGRESS_FILE).write_text(json.dumps({**progress, "iteration": ITERATIONS - 1}))
    (forged / trust.SIGNATURE).write_text((real / trust.SIGNATURE).read_text())

    second = subprocess.run([*command, "resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"ITERATIONS {ITERATIONS}" in second.stdout
    assert f"resuming after iteration {kept} " in second.stdout
    assert f"ignoring checkpoint {forged}" in second.stdout
    assert not marker.exists()
    assert (out / KEPT / "grl-aecnn" / f"{kept:06d}").is_dir()

    # One MLflow run per policy and per stage, continued: no iteration up to the checkpoint
    # was trained (or logged) twice, and the curve goes on to the last iteration.
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    policy_runs = client.search_runs([experiment_id], "tags.`grl_aecnn.policy` = 'grl-aecnn'")
    stage_runs = client.search_runs([experiment_id], "tags.`grl_aecnn.stage` = 'policies'")
    assert len(policy_runs) == 1 and len(stage_runs) == 1
    steps = [m.step for m in client.get_metric_history(policy_runs[0].info.run_id, "episode_return_mean")]
    assert [s for s in steps if s <= kept] == list(range(1, kept + 1)), steps
    assert max(steps) == ITERATIONS
    assert policy_runs[0].info.status == stage_runs[0].info.status == "FINISHED"
    assert policy_runs[0].data.tags["mlflow.parentRunId"] == stage_runs[0].info.run_id


@pytest.fixture()
def cfg(tmp_path: Path, mlflow_store: str):
    return load_config("quick", ["name=resume", f"output_dir={tmp_path / 'out'}"])


def test_runs_left_running_are_closed_as_killed(cfg) -> None:
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg))
    with tracking.pipeline_run(cfg) as run:
        pass
    client = MlflowClient()
    orphan = client.create_run(run.info.experiment_id, tags={tracking.RUN_DIR_TAG: str(cfg.run_dir.resolve())})
    elsewhere = client.create_run(run.info.experiment_id, tags={tracking.RUN_DIR_TAG: "/another/run"})
    assert tracking.close_killed_runs(cfg) == 1
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
    client.set_terminated(elsewhere.info.run_id)


def test_interrupted_run_is_continued_and_a_finished_one_is_not(cfg) -> None:
    with pytest.raises(KeyboardInterrupt), tracking.stage_run(cfg, "backbone") as first:
        raise KeyboardInterrupt
    with tracking.stage_run(cfg, "backbone") as second:
        pass
    with tracking.stage_run(cfg, "backbone") as third:
        pass
    assert second.info.run_id == first.info.run_id != third.info.run_id


def test_reused_stage_links_to_the_run_that_produced_it(cfg) -> None:
    from grl_aecnn.pipeline import mark_finished, run_stage

    with tracking.stage_run(cfg, "backbone") as producer:
        pass
    mark_finished(cfg, "backbone", {"test_accuracy": 0.5}, 1.0, producer.info.run_id)
    with tracking.pipeline_run(cfg) as parent:
        assert run_stage(cfg, "backbone") == {"test_accuracy": 0.5}
    tags = MlflowClient().get_run(parent.info.run_id).data.tags
    assert tags[tracking.REUSED_TAG + "backbone"] == producer.info.run_id
