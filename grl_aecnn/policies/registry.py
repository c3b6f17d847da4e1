"""Build policies by kind from plain specs, so the harness runs rules, the oracle, DROO and
RLlib checkpoints alike.

A spec is `{"name", "kind", "codecs", "path", "params", "model"}`; the policies stage writes
`policies.json` as `{name: {"kind": "rllib" | "droo", "path": ..., "codecs": [...], "model": ...}}`
(paths relative to the index; "model": the registered MLflow Model version, when there is one).
Add a kind with `register_policy_factory(kind, fn)`; `fn(spec, env) -> Policy` gets the env
the policy will act in (built with `spec.codecs`). Kind "rllib" is imported on first use from
`RLLIB_FACTORY` so the harness does not import RLlib unless asked.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from grl_aecnn.policies.base import Policy
from grl_aecnn.policies.oracle import Oracle
from grl_aecnn.policies.rules import AllLocal, FixedPoint, GreedyEstimate, RandomPolicy

if TYPE_CHECKING:
    from grl_aecnn.sim.env import MECEnv

RLLIB_FACTORY = "grl_aecnn.rl.policy:make_policy"


@dataclass
class PolicySpec:
    name: str
    kind: str
    codecs: list[str] | None = None  # None: the scenario's codecs
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # models:/<name>/<version> of the registered policy


PolicyFactory = Callable[[PolicySpec, "MECEnv"], Policy]
_FACTORIES: dict[str, PolicyFactory] = {}


def register_policy_factory(kind: str, fn: PolicyFactory) -> None:
    _FACTORIES[kind] = fn


def build_policy(spec: PolicySpec, env: "MECEnv") -> Policy:
    if spec.kind not in _FACTORIES and spec.kind == "rllib":
        module, func = RLLIB_FACTORY.split(":")
        register_policy_factory("rllib", getattr(importlib.import_module(module), func))
    if spec.kind not in _FACTORIES:
        raise ValueError(f"policy {spec.name!r}: unknown kind {spec.kind!r} (known: {', '.join(sorted(_FACTORIES))})")
    return _FACTORIES[spec.kind](spec, env)


def _rule(spec: PolicySpec, env: "MECEnv") -> Policy:
    rule = spec.params.get("rule", spec.name)
    if rule == "all-local":
        return AllLocal()
    if rule == "random":
        return RandomPolicy(int(spec.params.get("seed", 0)))
    if rule == "greedy":
        return GreedyEstimate()
    if rule == "fixed":
        point = spec.params["point"]
        if point not in env.points.ids:
            raise ValueError(f"policy {spec.name!r}: point {point!r} not offered (have {list(env.points.ids)})")
        return FixedPoint(env.points.ids.index(point), spec.name)
    raise ValueError(f"policy {spec.name!r}: unknown rule {rule!r}")


def _oracle(spec: PolicySpec, env: "MECEnv") -> Policy:
    oracle = Oracle(method=spec.params.get("method", "search"), state=spec.params.get("state", "realised"))
    oracle.name = spec.name
    return oracle


def _robust(spec: PolicySpec, env: "MECEnv") -> Policy:
    from grl_aecnn.policies.robust import RobustPlanner

    planner = RobustPlanner(samples=int(spec.params.get("samples", 32)), seed=int(spec.params.get("seed", 0)))
    planner.name = spec.name
    return planner


def _droo(spec: PolicySpec, env: "MECEnv") -> Policy:
    from grl_aecnn.policies.droo import DROOPolicy

    if not spec.path:
        raise ValueError(f"policy {spec.name!r}: kind 'droo' needs a checkpoint path")
    return DROOPolicy.load(spec.path, name=spec.name)


register_policy_factory("rule", _rule)
register_policy_factory("oracle", _oracle)
register_policy_factory("droo", _droo)
register_policy_factory("robust", _robust)


def read_index(path: str | Path) -> list[PolicySpec]:
    """Specs from a policies.json index; relative paths are resolved against its folder."""
    path = Path(path)
    entries = json.loads(path.read_text())
    specs = []
    for name, entry in entries.items():
        ckpt = entry.get("path")
        if ckpt and not Path(ckpt).is_absolute():
            ckpt = str(path.parent / ckpt)
        specs.append(PolicySpec(name=name, kind=entry["kind"], codecs=entry.get("codecs"), path=ckpt,
                                params=entry.get("params", {}), model=entry.get("model")))
    return specs


def read_policies(path: str | Path, model: str | None = None) -> list[PolicySpec]:
    """Specs from a ``policies.json`` index, a folder holding one, or one exported GRL policy
    folder (``policy.json``, e.g. a registered model's data folder; ``model``: its version URI)."""
    path = Path(path)
    if path.is_dir() and (path / "policy.json").is_file():
        meta = json.loads((path / "policy.json").read_text())
        return [PolicySpec(name=meta.get("name", path.name), kind="rllib", codecs=meta.get("codecs"),
                           path=str(path), model=model)]
    return read_index(path / "policies.json" if path.is_dir() else path)
