"""Evaluation harness: every policy on the same seeded episodes (common random numbers) for
each scenario of a sweep; mean and 95 % CI of accuracy, success rate, throughput and reward,
plus the ratio to the oracle. Writes results.csv, one PNG per sweep axis and report.md.

Sweep file (tune_configs/<name>.yaml): `axes: {scenario_field: [values, ...]}`; each value
changes one field of the base scenario, and the base scenario itself is row "default";
`combinations: {name: {field: value, ...}}` change several fields at once (unseen conditions).
`network: NxM` sets devices and servers together.
"""

from __future__ import annotations

import csv
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from grl_aecnn.policies.base import bind_policy
from grl_aecnn.policies.registry import PolicySpec, build_policy, read_index
from grl_aecnn.policies.settings import ACTOR_ONLY
from grl_aecnn.profile import CodecProfile, load_profile
from grl_aecnn.progress import LogLines
from grl_aecnn.sim.env import EPISODE_METRICS, MECEnv, episode_metrics
from grl_aecnn.sim.scenarios import NETWORK, ScenarioDistribution, with_changes
from grl_aecnn.sim.settings import ScenarioConfig
from grl_aecnn.stats import ci95, paired_ci95

if TYPE_CHECKING:
    from grl_aecnn.config import ExperimentConfig
    from grl_aecnn.evaluation.settings import EvaluationConfig

METRICS = EPISODE_METRICS
ORACLE = "oracle"
PLANNER = "planner"  # the oracle's solver on the estimated state (deployable)
ROBUST = "robust-planner"  # expected reward under the estimate-error model (deployable)
COMBINATION = "combination"  # sweep rows that change several fields at once


@dataclass
class PolicyRun:
    """One policy on one scenario: per-episode metrics and which points it chose."""

    policy: str
    episodes: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    point_counts: dict[str, int] = field(default_factory=dict)
    distinct_points_per_slot: list[int] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


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
        infos = []
        for _ in range(scenario.episode_slots):
            action = policy.act(obs)
            task = env.core.task[0]
            chosen = [labels[a] for a in action[: scenario.num_devices][task]]
            for label in chosen:
                run.point_counts[label] = run.point_counts.get(label, 0) + 1
            run.distinct_points_per_slot.append(len(set(chosen)))
            obs, _, _, _, info = env.step(action)
            infos.append(info)
        for metric, value in episode_metrics(infos, scenario.slot_s).items():
            run.episodes[metric].append(value)
    run.seconds = time.perf_counter() - start
    summary = getattr(policy, "summary", None)
    if callable(summary):
        run.extra = summary()
    return run


def codec_set(codecs: list[str] | tuple[str, ...]) -> str:
    return "+".join(sorted(codecs))


def oracle_name(codecs: list[str] | tuple[str, ...]) -> str:
    """`oracle:<codecs>`: the oracle restricted to one action set."""
    return f"{ORACLE}:{codec_set(codecs)}"


def actor_name(policy: str) -> str:
    """`<policy>:actor`: a GRL policy's actor alone (its argmax, critic off), the ablation that
    shows what the critic adds."""
    return f"{policy}:actor"


def default_specs(profile: CodecProfile, scenario: ScenarioConfig, ev: "EvaluationConfig",
                  trained: list[PolicySpec]) -> list[PolicySpec]:
    """References, rules and the trained policies, filtered by `ev.policies` when given.

    The subject (``ev.subject``) also runs as its actor alone (`actor_name`).
    References: the oracle on every codec, the oracle on each action set a policy here uses
    (`oracle:<codecs>`, the fair reference for that policy), the planner (the oracle's solver
    on the estimates) and the robust planner (expected reward under the estimate-error model).
    """
    all_codecs = sorted({p.codec for p in profile.points} - {"local"})
    oracle_codecs = ev.oracle_codecs or all_codecs
    specs = [PolicySpec(ORACLE, "oracle", codecs=oracle_codecs, params={"method": ev.oracle_method})]
    action_sets = {codec_set(s.codecs or scenario.codecs): list(s.codecs or scenario.codecs) for s in trained}
    action_sets.setdefault(codec_set(scenario.codecs), list(scenario.codecs))
    specs += [PolicySpec(oracle_name(codecs), "oracle", codecs=codecs, params={"method": ev.oracle_method})
              for key, codecs in sorted(action_sets.items()) if key != codec_set(oracle_codecs)]
    specs.append(PolicySpec(PLANNER, "oracle", codecs=scenario.codecs,
                            params={"method": ev.oracle_method, "state": "estimated"}))
    specs.append(PolicySpec(ROBUST, "robust", codecs=scenario.codecs, params={"samples": ev.robust_samples}))
    specs += [
        PolicySpec("greedy", "rule"), PolicySpec("random", "rule"), PolicySpec("all-local", "rule")]
    if any(p.codec == "raw-image" for p in profile.points):
        specs.append(PolicySpec("all-edge", "rule", codecs=["raw-image"],
                                params={"rule": "fixed", "point": profile.select(["raw-image"])[0].id}))
    if ev.fixed_points:
        specs += [PolicySpec(f"fixed:{p.id}", "rule", params={"rule": "fixed", "point": p.id})
                  for p in profile.select(scenario.codecs)]
    specs += trained
    specs += [replace(s, name=actor_name(s.name), params={**s.params, "critic": ACTOR_ONLY.model_dump()})
              for s in trained if s.kind == "rllib" and s.name == ev.subject]
    if ev.policies is not None:
        unknown = sorted(set(ev.policies) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"evaluation.policies: unknown {unknown} (have {[s.name for s in specs]})")
        specs = [s for s in specs if s.name in ev.policies]
    return specs


@dataclass(frozen=True)
class Sweep:
    """A sweep file: `axes` change one scenario field at a time; `combinations` (name ->
    {field: value}) change several at once, the unseen conditions a policy must survive."""

    axes: dict[str, list[Any]]
    combinations: dict[str, dict[str, Any]]


def load_sweep(name_or_path: str) -> Sweep:
    """The sweep's axes and combinations; every key must be a scenario field (or `network`)."""
    from grl_aecnn.config import sweep_path
    from grl_aecnn.input_files import MAX_BYTES, BadFile, YamlError, load_yaml, read_text

    path = sweep_path(name_or_path)
    try:
        data = load_yaml(read_text(path, "sweep file", MAX_BYTES)) or {}
    except YamlError as err:
        raise BadFile(f"sweep file {path}: {err}") from None
    axes = data.get("axes") or {} if isinstance(data, dict) else None
    combos = data.get("combinations") or {} if isinstance(data, dict) else None
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()) or \
            not isinstance(combos, dict) or not all(isinstance(c, dict) for c in combos.values()):
        raise BadFile(f"sweep file {path}: expected `axes: {{field: [values, ...]}}` and "
                      "`combinations: {name: {field: value, ...}}`")
    sweep = Sweep(axes=axes, combinations=combos)
    keys = set(sweep.axes) | {k for combo in sweep.combinations.values() for k in combo}
    unknown = sorted(keys - set(ScenarioConfig.model_fields) - {NETWORK})
    if unknown:
        raise ValueError(f"{path}: {unknown} are not scenario fields")
    return sweep


def scenario_with(base: ScenarioConfig, changes: dict[str, Any]) -> ScenarioConfig:
    """The base with `changes`, its padding grown to fit (policies act on larger networks)."""
    data = with_changes(base, changes)
    data["max_devices"] = max(base.max_devices, data["num_devices"])
    data["max_servers"] = max(base.max_servers, data["num_servers"])
    return ScenarioConfig.model_validate(data)


def sweep_scenarios(base: ScenarioConfig, sweep: Sweep, slots: int) -> list[tuple[str, Any, ScenarioConfig]]:
    """("default", None, base), one scenario per axis value, then ("combination", name, ...)
    per combination (invalid ones raise, naming the field)."""
    base = base.model_copy(update={"episode_slots": slots})
    out = [("default", None, base)]
    out += [(axis, value, scenario_with(base, {axis: value}))
            for axis, values in sweep.axes.items() for value in values]
    out += [(COMBINATION, name, scenario_with(base, changes)) for name, changes in sweep.combinations.items()]
    return out


def evaluate(profile: CodecProfile | str | Path, scenario: ScenarioConfig, ev: "EvaluationConfig",
             out_dir: str | Path, trained: list[PolicySpec] | None = None, seed: int = 0,
             train_scenarios: ScenarioDistribution | None = None) -> dict[str, Any]:
    """Run the sweep, write results.csv, plots and report.md into out_dir; log to MLflow when a
    run is active. Returns a JSON-able summary (default-scenario table, calibration margins).

    `train_scenarios`: what the learned policies trained on, to mark the rows inside it."""
    from tqdm import tqdm

    from grl_aecnn.evaluation import plots, report

    profile = profile if isinstance(profile, CodecProfile) else load_profile(profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = default_specs(profile, scenario, ev, trained or [])
    scenarios = sweep_scenarios(scenario, load_sweep(ev.sweep), ev.slots_per_episode)
    dist = train_scenarios or ScenarioDistribution()
    rows: list[dict[str, Any]] = []
    default_runs: list[PolicyRun] = []
    jobs = [(a, v, sc, spec) for a, v, sc in scenarios for spec in specs]
    args = [(spec, sc, profile, (ev.default_episodes or ev.episodes) if a == "default" else ev.episodes, seed)
            for a, v, sc, spec in jobs]
    bar = tqdm(total=len(args), desc="evaluate", disable=None)
    lines = LogLines()

    def progress(results: Iterable[PolicyRun]) -> Iterator[PolicyRun]:
        """Advance the bar (terminal) or print a line (log) per finished job, in job order."""
        for done, ((axis, value, _, spec), run) in enumerate(zip(jobs, results), 1):
            bar.update()
            if bar.disable:
                lines(f"[evaluation] {done}/{len(jobs)} {axis}={value} {spec.name}: reward/slot "
                      f"{np.mean(run.episodes['reward']):.3f}", final=done == len(jobs))
            yield run

    if ev.workers == 1:  # in this process: policy kinds registered here only are available
        runs = list(progress(run_policy(*a) for a in args))
    else:  # every job is seeded on its own, so the results do not depend on the workers
        # Spawned, not forked: the caller may hold Ray and torch threads.
        with ProcessPoolExecutor(max_workers=ev.workers or os.cpu_count(), mp_context=get_context("spawn")) as pool:
            runs = list(progress(pool.map(run_policy, *zip(*args))))
    bar.close()
    for (axis, value, sc, spec), run in zip(jobs, runs):
        inside = dist.contains(sc, scenario) if not dist.empty else axis == "default"
        rows.append(_row(axis, value, run, spec, sc, inside))
        if axis == "default":
            default_runs.append(run)
    _add_ratios(rows)
    _add_robust_intervals(rows, runs)
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pngs = plots.plot_axes(rows, out_dir) + plots.plot_ratios(rows, ev.subject, out_dir)
    calib = report.calibration(rows, default_runs)
    table = report.generalisation(rows, ev.subject)
    pairs = report.paired_differences(rows, default_runs, ev.subject, (ROBUST,))
    report.write_report(out_dir / "report.md", rows, pngs, calib, table, ev.subject, pairs)
    _log_mlflow(rows, calib, [csv_path, out_dir / "report.md", *pngs])
    return {"results": str(csv_path), "report": str(out_dir / "report.md"), "calibration": calib,
            "default": {r["policy"]: {m: r[m] for m in METRICS} for r in rows if r["axis"] == "default"},
            "paired": pairs, "generalisation": table}


LEARNED_KINDS = ("rllib", "droo")


def _row(axis: str, value: Any, run: PolicyRun, spec: PolicySpec, sc: ScenarioConfig,
         inside: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"axis": axis, "value": "" if value is None else value, "policy": run.policy,
                           "kind": spec.kind, "codecs": codec_set(spec.codecs or sc.codecs),
                           "deployable": not (spec.kind == "oracle" and spec.params.get("state", "realised")
                                              == "realised"),
                           "learned": spec.kind in LEARNED_KINDS, "in_training": inside,
                           "episodes": len(run.episodes["reward"])}
    for m in METRICS:
        row[m], row[f"{m}_ci95"] = ci95(run.episodes[m])
    row["seconds"] = round(run.seconds, 2)
    return row


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Reward (and metric) ratios of every row to the references of its scenario row:
    `oracle` (every codec), the oracle on the row's own action set, the planner and the
    robust planner."""
    by_row: dict[tuple[str, Any], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_row.setdefault((r["axis"], r["value"]), {})[r["policy"]] = r
    for r in rows:
        refs = by_row[(r["axis"], r["value"])]
        own = refs.get(oracle_name(r["codecs"].split("+")), refs.get(ORACLE))
        for m in METRICS:
            r[f"{m}_vs_oracle"] = _ratio(r[m], refs.get(ORACLE), m)
        r["reward_vs_own_oracle"] = _ratio(r["reward"], own, "reward")
        r["reward_vs_planner"] = _ratio(r["reward"], refs.get(PLANNER), "reward")
        r["reward_vs_robust"] = _ratio(r["reward"], refs.get(ROBUST), "reward")


def _add_robust_intervals(rows: list[dict[str, Any]], runs: list[PolicyRun]) -> None:
    """`reward_vs_robust_ci95`: the half-width of each row's ratio to the robust planner, from the
    95 % interval of the per-episode reward difference (the same episodes) over the robust
    planner's mean reward. Side by side the two rewards' intervals would mostly measure the
    episodes' draws, which move both together."""
    robust = {(r["axis"], r["value"]): (r, run) for r, run in zip(rows, runs) if r["policy"] == ROBUST}
    for r, run in zip(rows, runs):
        ref, ref_run = robust.get((r["axis"], r["value"]), (None, None))
        r["reward_vs_robust_ci95"] = (paired_ci95(run.episodes["reward"], ref_run.episodes["reward"])[1]
                                      / abs(ref["reward"])) if ref and ref["reward"] else float("nan")


def _ratio(value: float, ref: dict[str, Any] | None, metric: str) -> float:
    return value / ref[metric] if ref and ref[metric] else float("nan")


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
                       cfg.stage_dir("evaluation"), trained=trained, seed=cfg.seed,
                       train_scenarios=cfg.policy.train_scenarios)
    summary["champions"] = set_champions(trained, summary["default"])
    return summary
