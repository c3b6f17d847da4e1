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
from grl_aecnn.sim.scenarios import ScenarioDistribution
from grl_aecnn.sim.settings import ScenarioConfig
from grl_aecnn.stats import paired_ci95

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"


def test_ci95_matches_t_interval() -> None:
    mean, half = ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    # paired: a constant offset between the two series has no spread at all
    assert paired_ci95([5.0, 9.0, 2.0], [4.0, 8.0, 1.0]) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    assert paired_ci95([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == ci95([1.0, 2.0, 3.0])


def test_evaluate_writes_results_plots_report_and_logs(tmp_path: Path, mlflow_store: str) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("axes:\n  bandwidth_hz: [0.2e6, 0.8e6]\n"
                     "combinations:\n  hard: {network: 6x2, deadline_max_s: 0.05, channel_est_error_db: 4.0}\n")
    register_policy_factory("test-local", lambda spec, env: AllLocal())
    ev = EvaluationConfig(episodes=2, default_episodes=3, slots_per_episode=5, sweep=str(sweep), fixed_points=False,
                          subject="my-local", robust_samples=8, workers=1)  # test-local lives here only
    sc = ScenarioConfig(num_devices=4, num_servers=1)
    # Two learned policies on two codec sets: each is compared with the oracle on its own set.
    trained = [PolicySpec("my-local", "test-local"), PolicySpec("bnpp-local", "test-local", codecs=["bottlenetpp"])]
    dist = ScenarioDistribution(ranges={"bandwidth_hz": [0.1e6, 0.5e6]})
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment("evaluate")  # in this store: an earlier test may have left another active
    with mlflow.start_run() as run:
        summary = evaluate(PROFILE, sc, ev, tmp_path / "out", trained=trained, seed=0, train_scenarios=dist)
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    policies = {r["policy"] for r in rows}
    assert {"oracle", "oracle:aecnn", "oracle:bottlenetpp", "planner", "robust-planner", "greedy", "random",
            "all-local", "all-edge", "my-local", "bnpp-local"} <= policies
    assert len(rows) == 4 * len(policies)  # default + 2 sweep values + 1 combination
    for name in ("sweep_bandwidth_hz.png", "sweep_combination.png", "ratios.png"):
        assert (tmp_path / "out" / name).exists()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Calibration" in report and "sweep_bandwidth_hz.png" in report
    assert "/ robust planner" in report and "## Generalisation (my-local)" in report
    base = {r["policy"]: r for r in rows if r["axis"] == "default"}
    # Same episodes for every policy: an AllLocal built twice under two names scores the same.
    assert base["my-local"]["reward"] == base["all-local"]["reward"] == base["bnpp-local"]["reward"]
    # Each policy's own-action-set reference: the aecnn oracle for one, the BottleNet++ oracle for the other.
    for name, ref in (("my-local", "oracle:aecnn"), ("bnpp-local", "oracle:bottlenetpp")):
        expected = float(base[name]["reward"]) / float(base[ref]["reward"])
        assert float(base[name]["reward_vs_own_oracle"]) == pytest.approx(expected)
    assert float(base["oracle:aecnn"]["reward"]) != float(base["oracle:bottlenetpp"]["reward"])
    assert float(base["planner"]["reward"]) <= float(base["oracle"]["reward"])
    # Rows inside the training distribution are marked: 0.2 MHz is inside [0.1, 0.5] MHz, 0.8 MHz is not.
    inside = {(r["axis"], r["value"]): r["in_training"] for r in rows if r["policy"] == "my-local"}
    assert inside[("bandwidth_hz", "0.2e6")] == "True" and inside[("bandwidth_hz", "0.8e6")] == "False"
    assert inside[("combination", "hard")] == "False"
    # The generalisation table ranks the subject among the deployable policies of every row.
    table = {t["scenario"]: t for t in summary["generalisation"]}
    assert set(table) == {"default", "bandwidth_hz=0.2e6", "bandwidth_hz=0.8e6", "combination=hard"}
    for t in table.values():
        rewards = t["rewards"]
        assert "oracle" not in rewards and "planner" in rewards and "robust-planner" in rewards
        assert t["rank"] == 1 + sum(r > t["reward"] for r in rewards.values())
    # the headline scenario gets default_episodes, the sweep values episodes
    assert {(r["axis"], r["episodes"]) for r in rows} == {("default", "3"), ("bandwidth_hz", "2"), ("combination", "2")}
    assert summary["calibration"]["oracle_margin_over_best_fixed"] > 0
    # the subject against the robust planner, paired over the default scenario's episodes
    pair = {p["policy"]: p for p in summary["paired"]}["robust-planner"]
    assert pair["reward"]["mean"] == pytest.approx(float(base["my-local"]["reward"]) -
                                                   float(base["robust-planner"]["reward"]))
    assert "## Paired differences (my-local, default scenario)" in report
    # every row's ratio to the robust planner carries its paired interval; the planner's own is exact
    for r in rows:
        half = float(r["reward_vs_robust_ci95"])
        assert half == 0.0 if r["policy"] == "robust-planner" else np.isfinite(half) and half >= 0
    assert any(float(r["reward_vs_robust_ci95"]) > 0 for r in rows)
    me = table["combination=hard"]
    assert f"| {me['vs_robust']:.3f} +- {me['vs_robust_ci95']:.3f} |" in report
    assert "Rows where the whole interval of my-local's ratio to the robust planner lies below 0.97" in report
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert "oracle.reward" in logged


def test_paired_differences_pair_episodes_and_skip_the_subjects_own_variants() -> None:
    from grl_aecnn.evaluation.harness import PolicyRun
    from grl_aecnn.evaluation.report import paired_differences

    def run(name: str, reward: list[float]) -> PolicyRun:
        return PolicyRun(name, {"reward": reward, "success_rate": [1.0] * len(reward), "throughput": reward})

    # the other policy is worse by 0.1 in every episode, though its own spread swamps that
    runs = [run("me", [5.0, 9.0, 2.0, 7.0]), run("me:actor", [0.0] * 4), run("other", [4.9, 8.9, 1.9, 6.9]),
            run("rule", [0.0] * 4), run("ref", [5.0, 9.0, 2.0, 7.0])]
    rows = [{"axis": "default", "policy": r.policy, "learned": r.policy in ("me", "me:actor", "other")} for r in runs]
    pairs = {p["policy"]: p for p in paired_differences(rows, runs, "me", ("ref",))}
    assert set(pairs) == {"other", "ref"}  # not itself, its actor alone, or a rule that is not a reference
    assert pairs["other"]["reward"]["mean"] == pytest.approx(0.1)
    assert pairs["other"]["reward"]["ci95"] == pytest.approx(0.0, abs=1e-9) and pairs["other"]["reward"]["ahead"]
    assert pairs["other"]["success_rate"] == {"mean": 0.0, "ci95": 0.0, "ahead": False}
    assert not pairs["ref"]["reward"]["ahead"]
    # side by side, the two intervals overlap
    assert ci95(runs[0].episodes["reward"])[1] > 0.1


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


def test_parallel_workers_give_the_same_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("axes:\n  deadline_max_s: [0.05]\n")
    sc = ScenarioConfig(num_devices=5, num_servers=2)
    rewards = []
    for workers in (1, 2):
        ev = EvaluationConfig(episodes=2, slots_per_episode=4, sweep=str(sweep), workers=workers, robust_samples=8,
                              policies=["planner", "robust-planner", "greedy", "random"])
        summary = evaluate(PROFILE, sc, ev, tmp_path / f"out{workers}", seed=3)
        rewards.append({name: row["reward"] for name, row in summary["default"].items()})
        rows = list(csv.DictReader((tmp_path / f"out{workers}" / "results.csv").open()))
        assert [r["policy"] for r in rows] == ["planner", "robust-planner", "greedy", "random"] * 2  # job order kept
    assert rewards[0] == rewards[1]
    # No terminal: progress reaches the log, the last job always.
    assert "[evaluation] 8/8 deadline_max_s=0.05 random: reward/slot" in capsys.readouterr().out
