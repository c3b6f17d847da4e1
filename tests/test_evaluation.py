"""Evaluation harness end to end on a tiny sweep: CSV, plots, report, MLflow, CI."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest

from grl_aecnn.evaluation.harness import ci95, evaluate, load_sweep
from grl_aecnn.evaluation.settings import EvaluationConfig
from grl_aecnn.policies.registry import PolicySpec, build_policy, register_policy_factory
from grl_aecnn.policies.rules import AllLocal
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"


def test_ci95_matches_t_interval() -> None:
    mean, half = ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)


def test_evaluate_writes_results_plots_report_and_logs(tmp_path: Path, mlflow_store: str) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("axes:\n  bandwidth_hz: [0.2e6, 0.8e6]\n")
    register_policy_factory("test-local", lambda spec, env: AllLocal())
    ev = EvaluationConfig(episodes=2, default_episodes=3, slots_per_episode=5, sweep=str(sweep), fixed_points=False)
    sc = ScenarioConfig(num_devices=4, num_servers=1)
    trained = [PolicySpec("my-local", "test-local")]
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment("evaluate")  # in this store: an earlier test may have left another active
    with mlflow.start_run() as run:
        summary = evaluate(PROFILE, sc, ev, tmp_path / "out", trained=trained, seed=0)
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    policies = {r["policy"] for r in rows}
    assert {"oracle", "planner", "greedy", "random", "all-local", "all-edge", "my-local"} <= policies
    assert len(rows) == 3 * len(policies)  # default + 2 sweep values
    assert (tmp_path / "out" / "sweep_bandwidth_hz.png").exists()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Calibration" in report and "sweep_bandwidth_hz.png" in report
    assert "reward / planner" in report  # every policy's ratio to the planner on the estimates
    # Same episodes for every policy: an AllLocal built twice under two names scores the same.
    base = {r["policy"]: r for r in rows if r["axis"] == "default"}
    assert base["my-local"]["reward"] == base["all-local"]["reward"]
    for name in ("all-local", "greedy", "planner"):
        assert float(base[name]["reward_vs_oracle"]) == pytest.approx(
            float(base[name]["reward"]) / float(base["oracle"]["reward"]))
    assert float(base["planner"]["reward"]) <= float(base["oracle"]["reward"])
    # the headline scenario gets default_episodes, the sweep values episodes
    assert {(r["axis"], r["episodes"]) for r in rows} == {("default", "3"), ("bandwidth_hz", "2")}
    assert summary["calibration"]["oracle_margin_over_best_fixed"] > 0
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert "oracle.reward" in logged


def test_unknown_kind_and_sweep_axis_rejected(tmp_path: Path) -> None:
    from grl_aecnn.sim.env import MECEnv
    from grl_aecnn.profile import load_profile

    env = MECEnv(ScenarioConfig(), load_profile(PROFILE))
    with pytest.raises(ValueError, match="unknown kind"):
        build_policy(PolicySpec("x", "nope"), env)
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes:\n  warp_speed: [1, 2]\n")
    with pytest.raises(ValueError, match="warp_speed"):
        load_sweep(str(bad))
