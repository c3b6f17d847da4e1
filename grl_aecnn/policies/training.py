"""The pipeline's policies stage: GRL policies by PPO (one per codec family) and DROO-AECNN.

Reads the codec profile written by the codecs stage and writes, in ``cfg.stage_dir("policies")``,
one folder per trained policy and the index ``policies.json``:
``{name: {"kind": "rllib" | "droo", "path": <folder, relative to the index>, "codecs": [...],
"model": "models:/<name>/<version>"}}``, which the evaluation harness loads through
``grl_aecnn.policies.registry`` (kind "rllib": ``grl_aecnn.rl.policy.make_policy``). The index
and the folders are logged together under the run's ``policies/`` artifacts, so
``runs:/<run id>/policies`` is a complete copy; each GRL policy is also a registered MLflow
Model (``grl_aecnn.models.logged``) whose ``champion`` alias the evaluation moves.
"""

from __future__ import annotations

import json
import time
from typing import Any

import mlflow

from grl_aecnn.config import ExperimentConfig
from grl_aecnn.profile import load_profile

# (policy name, codecs it may offload with); a codec missing from the profile skips its policy.
GRL_POLICIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("grl-aecnn", ("aecnn",)),
    ("grl-bottlenetpp", ("bottlenetpp",)),
    ("grl-deepjscc", ("deepjscc",)),
)
INDEX = "policies.json"


def train_policies(cfg: ExperimentConfig, resume: bool) -> dict[str, Any]:
    """Train every policy the profile supports; return a JSON-able summary for the pipeline."""
    from grl_aecnn.rl.train import PolicyRun, log_policies, train_ppo
    from grl_aecnn.runtime import init_ray

    profile = load_profile(cfg.stage_dir("codecs") / "profile.json")
    available = {p.codec for p in profile.points}
    runs = []
    for name, codecs in GRL_POLICIES:
        missing = sorted(set(codecs) - available)
        if missing:
            print(f"[policies] skipping {name}: the profile has no {', '.join(missing)} points")
            continue
        runs.append(PolicyRun(name, codecs))

    out = cfg.stage_dir("policies")
    index: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    if runs:
        init_ray(cfg)
        start = time.perf_counter()
        trained = train_ppo(cfg, profile, runs, out, resume)
        log_policies(trained)
        mlflow.log_metric("ppo_seconds", time.perf_counter() - start)
        for policy in trained.values():
            model = _log_policy_model(cfg, profile, policy)
            index[policy.name] = {"kind": "rllib", "path": policy.path.name, "codecs": list(policy.codecs),
                                  "model": model}
            summary[policy.name] = {"iterations": policy.iterations, **policy.metrics,
                                    "env_runner_nodes": list(policy.nodes)}

    if "aecnn" in available:
        from grl_aecnn.policies.droo import train_droo

        start = time.perf_counter()
        scenario = cfg.scenario.model_copy(update={"codecs": ["aecnn"]})
        droo = train_droo(scenario, profile, ["aecnn"], cfg.policy.droo, out / "droo-aecnn", cfg.seed)
        mlflow.log_metric("droo_seconds", time.perf_counter() - start)
        index["droo-aecnn"] = {"kind": "droo", "path": droo.relative_to(out).as_posix(), "codecs": ["aecnn"]}
        mlflow.log_artifacts(str(droo.parent), artifact_path=f"policies/{droo.parent.name}")

    (out / INDEX).write_text(json.dumps(index, indent=2))
    mlflow.log_artifact(str(out / INDEX), artifact_path="policies")
    return {"index": index, "training": summary}


def _log_policy_model(cfg: ExperimentConfig, profile: Any, policy: Any) -> str:
    """Register the exported policy as an MLflow Model; its ``models:/`` version URI."""
    from grl_aecnn.models.logged import log_policy_model, registered_name, version_uri
    from grl_aecnn.sim.env import MECEnv

    env = MECEnv(cfg.scenario.model_copy(update={"codecs": list(policy.codecs)}), profile, list(policy.codecs))
    obs, _ = env.reset(seed=cfg.seed)
    example = {key: value[None] for key, value in obs.items()}
    figures = {"codecs": "+".join(policy.codecs), "iterations": policy.iterations,
               "trained_on": f"{cfg.scenario.num_devices}x{cfg.scenario.num_servers}", **policy.metrics}
    info = log_policy_model(cfg, policy.name, policy.path, example, figures)
    return version_uri(registered_name(cfg, policy.name), info.registered_model_version)
