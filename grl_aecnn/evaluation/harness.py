"""Evaluation harness: every policy on the same seeded episodes (common random numbers) for
each scenario of a sweep; mean and 95 % CI of accuracy, success rate, throughput and reward,
plus the ratio to the oracle. Writes results.csv, one PNG per sweep axis and report.md.

Sweep file (tune_configs/<name>.yaml): `axes: {scenario_field: [values, ...]}`; each value
changes one field of the base scenario, and the base scenario itself is row "default".
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from scipy import stats

from grl_aecnn.policies.base import bind_policy
from grl_aecnn.policies.registry import PolicySpec, build_policy, read_index
from grl_aecnn.profile import CodecProfile, load_profile
from grl_aecnn.sim.env import MECEnv
from grl_aecnn.sim.settings import ScenarioConfig

if TYPE_CHECKING:
    from grl_aecnn.config import ExperimentConfig
    from grl_aecnn.evaluation.settings import EvaluationConfig

METRICS = ("accuracy", "success_rate", "throughput", "reward")
ORACLE = "oracle"
PLANNER = "planner"  # the oracle's solver on the estimated state (deployable)


@dataclass
class PolicyRun:
    """One policy on one scenario: per-episode metrics and which points it chose."""

    policy: str
    episodes: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    point_counts: dict[str, int] = field(default_factory=dict)
    distinct_points_per_slot: list[int] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def episode_seed(seed: int, episode: int) -> int:
    return 10_000 * seed + episode


def run_policy(spec: PolicySpec, scenario: ScenarioConfig, profile: CodecProfile, episodes: int,
               seed: int) -> PolicyRun:
    """Play `episodes` seeded episodes; every policy gets the same seeds, so the same episodes."""
    env = MECEnv(scenario, profile, codecs=spec.codecs)
    policy = build_policy(spec, env)
    bind_policy(policy, env)
    run = PolicyRun(policy=spec.name)
    labels = ["local"] + [pid for _ in range(scenario.max_servers) for pid in env.points.ids]
    start = time.perf_counter()
    for ep in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, ep))
        tot = {"reward": 0.0, "tasks": 0.0, "on_time": 0.0, "accuracy_sum": 0.0}
        for _ in range(scenario.episode_slots):
            action = policy.act(obs)
            task = env.core.task[0]
            chosen = [labels[a] for a in action[: scenario.num_devices][task]]
            for label in chosen:
                run.point_counts[label] = run.point_counts.get(label, 0) + 1
            run.distinct_points_per_slot.append(len(set(chosen)))
            obs, _, _, _, info = env.step(action)
            for key in tot:
                tot[key] += info[key]
        tasks = max(tot["tasks"], 1.0)
        run.episodes["accuracy"].append(tot["accuracy_sum"] / tasks)
        run.episodes["success_rate"].append(tot["on_time"] / tasks)
        run.episodes["throughput"].append(tot["on_time"] / (scenario.episode_slots * scenario.slot_s))
        run.episodes["reward"].append(tot["reward"] / scenario.episode_slots)
    run.seconds = time.perf_counter() - start
    summary = getattr(policy, "summary", None)
    if callable(summary):
        run.extra = summary()
    return run


def default_specs(profile: CodecProfile, scenario: ScenarioConfig, ev: "EvaluationConfig",
                  trained: list[PolicySpec]) -> list[PolicySpec]:
    """Rules, the oracle and the trained policies, filtered by `ev.policies` when given."""
    all_codecs = sorted({p.codec for p in profile.points} - {"local"})
    oracle_codecs = ev.oracle_codecs or all_codecs
    specs = [PolicySpec(ORACLE, "oracle", codecs=oracle_codecs, params={"method": ev.oracle_method})]
    if sorted(scenario.codecs) != sorted(oracle_codecs):
        # The oracle on the learned policies' own action set: the fair reference for their ratio.
        specs.append(PolicySpec(f"{ORACLE}:{'+'.join(scenario.codecs)}", "oracle", codecs=scenario.codecs,
                                params={"method": ev.oracle_method}))
    # The oracle's solver on the estimates: what a planner without perfect knowledge reaches.
    specs.append(PolicySpec(PLANNER, "oracle", codecs=scenario.codecs,
                            params={"method": ev.oracle_method, "state": "estimated"}))
    specs += [
        PolicySpec("greedy", "rule"), PolicySpec("random", "rule"), PolicySpec("all-local", "rule")]
    if any(p.codec == "raw-image" for p in profile.points):
        specs.append(PolicySpec("all-edge", "rule", codecs=["raw-image"],
                                params={"rule": "fixed", "point": profile.select(["raw-image"])[0].id}))
    if ev.fixed_points:
        specs += [PolicySpec(f"fixed:{p.id}", "rule", params={"rule": "fixed", "point": p.id})
                  for p in profile.select(scenario.codecs)]
    specs += trained
    if ev.policies is not None:
        unknown = sorted(set(ev.policies) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"evaluation.policies: unknown {unknown} (have {[s.name for s in specs]})")
        specs = [s for s in specs if s.name in ev.policies]
    return specs


NETWORK_AXIS = "network"  # values "NxM": N devices and M servers at once (generalisation)


def parse_network(value: str) -> tuple[int, int]:
    try:
        n, m = (int(x) for x in str(value).lower().split("x"))
    except ValueError:
        raise ValueError(f"axis {NETWORK_AXIS}: {value!r} is not of the form NxM, e.g. 30x4") from None
    return n, m


def load_sweep(name_or_path: str) -> dict[str, list[Any]]:
    """The sweep's axes; each axis must be a ScenarioConfig field."""
    from grl_aecnn.config import PRESET_DIR

    path = Path(name_or_path)
    if not path.exists():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"sweep file not found: {name_or_path} (looked in {PRESET_DIR})")
    axes = (yaml.safe_load(path.read_text()) or {}).get("axes", {})
    unknown = sorted(set(axes) - set(ScenarioConfig.model_fields) - {NETWORK_AXIS})
    if unknown:
        raise ValueError(f"{path}: axes {unknown} are not scenario fields")
    return axes


def sweep_scenarios(base: ScenarioConfig, axes: dict[str, list[Any]], slots: int
                    ) -> list[tuple[str, Any, ScenarioConfig]]:
    """("default", None, base) then one scenario per axis value (invalid ones raise, naming it)."""
    base = base.model_copy(update={"episode_slots": slots})
    out = [("default", None, base)]
    for axis, values in axes.items():
        for value in values:
            data = base.model_dump()
            if axis == NETWORK_AXIS:
                data["num_devices"], data["num_servers"] = parse_network(value)
            else:
                data[axis] = value
            data["max_devices"] = max(base.max_devices, data["num_devices"])
            data["max_servers"] = max(base.max_servers, data["num_servers"])
            out.append((axis, value, ScenarioConfig.model_validate(data)))
    return out


def evaluate(profile: CodecProfile | str | Path, scenario: ScenarioConfig, ev: "EvaluationConfig",
             out_dir: str | Path, trained: list[PolicySpec] | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the sweep, write results.csv, plots and report.md into out_dir; log to MLflow when a
    run is active. Returns a JSON-able summary (default-scenario table, calibration margins)."""
    from tqdm import tqdm

    from grl_aecnn.evaluation import plots, report

    profile = profile if isinstance(profile, CodecProfile) else load_profile(profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = default_specs(profile, scenario, ev, trained or [])
    scenarios = sweep_scenarios(scenario, load_sweep(ev.sweep), ev.slots_per_episode)
    rows: list[dict[str, Any]] = []
    default_runs: list[PolicyRun] = []
    jobs = [(a, v, sc, spec) for a, v, sc in scenarios for spec in specs]
    for axis, value, sc, spec in tqdm(jobs, desc="evaluate", disable=None):
        episodes = (ev.default_episodes or ev.episodes) if axis == "default" else ev.episodes
        run = run_policy(spec, sc, profile, episodes, seed)
        rows.append(_row(axis, value, run))
        if axis == "default":
            default_runs.append(run)
    _add_oracle_ratios(rows)
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pngs = plots.plot_axes(rows, out_dir)
    calib = report.calibration(rows, default_runs)
    report.write_report(out_dir / "report.md", rows, pngs, calib, default_runs)
    _log_mlflow(rows, calib, [csv_path, out_dir / "report.md", *pngs])
    return {"results": str(csv_path), "report": str(out_dir / "report.md"), "calibration": calib,
            "default": {r["policy"]: {m: r[m] for m in METRICS} for r in rows if r["axis"] == "default"}}


def _row(axis: str, value: Any, run: PolicyRun) -> dict[str, Any]:
    row: dict[str, Any] = {"axis": axis, "value": "" if value is None else value, "policy": run.policy,
                           "episodes": len(run.episodes["reward"])}
    for m in METRICS:
        row[m], row[f"{m}_ci95"] = ci95(run.episodes[m])
    row["seconds"] = round(run.seconds, 2)
    return row


def _add_oracle_ratios(rows: list[dict[str, Any]]) -> None:
    oracle = {(r["axis"], r["value"]): r for r in rows if r["policy"] == ORACLE}
    for r in rows:
        ref = oracle.get((r["axis"], r["value"]))
        for m in METRICS:
            r[f"{m}_vs_oracle"] = r[m] / ref[m] if ref and ref[m] else float("nan")


def _log_mlflow(rows: list[dict[str, Any]], calib: dict[str, Any], files: list[Path]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    for r in rows:
        if r["axis"] == "default":
            name = r["policy"].replace(":", "_")
            mlflow.log_metrics({f"{name}.{m}": r[m] for m in METRICS})
    mlflow.log_metrics({k: v for k, v in calib.items() if isinstance(v, (int, float))})
    for f in files:
        mlflow.log_artifact(str(f))


def evaluate_pipeline(cfg: "ExperimentConfig", resume: bool) -> dict[str, Any]:
    """Pipeline stage: profile from the codecs stage, trained policies from policies.json; the
    registered policies' ``champion`` alias follows the best evaluation reward."""
    from grl_aecnn.models.logged import set_champions

    index = cfg.stage_dir("policies") / "policies.json"
    trained = read_index(index) if index.exists() else []
    summary = evaluate(cfg.stage_dir("codecs") / "profile.json", cfg.scenario, cfg.evaluation,
                       cfg.stage_dir("evaluation"), trained=trained, seed=cfg.seed)
    summary["champions"] = set_champions(trained, summary["default"])
    return summary
