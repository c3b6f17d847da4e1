"""A trained GRL policy outside RLlib: export, load, ``act(obs)``.

Export format (a folder): ``module.safetensors`` (the RLModule's weights) and ``policy.json``
(module kind, model config, observation shapes, action sizes, codecs, training metadata).
Loading needs neither Ray's checkpoint pickles nor the Algorithm: the module is rebuilt from
the JSON and the weights are read with safetensors, so a policy file from anywhere is
never unpickled, and it survives Ray upgrades.

``act`` plays one slot. The actor's own decision is RLlib's deterministic action, the
per-device argmax of the masked logits (``TorchFactoredCategorical.to_deterministic``). A
policy exported with an active ``critic`` record (``policy.critic`` at training) and bound to
an env (``bind``, as the harness does) instead plays the candidate with the highest expected
slot reward under the scenario's estimate-error model (``grl_aecnn.policies.candidates``); it
reads the env's estimated state, the observation's own content in physical units. The ONNX
export and the pyfunc model are the actor alone.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from rllib_models.base import OffloadingRLModule
from rllib_models.gcn import GCNOffloadingModule
from rllib_models.mlp import MLPOffloadingModule

from grl_aecnn.models.policy_net import FORMAT_VERSION, META, WEIGHTS
from grl_aecnn.policies.candidates import CandidateCritic, critic_from_meta
from grl_aecnn.policies.settings import CriticConfig

if TYPE_CHECKING:
    from grl_aecnn.policies.registry import PolicySpec
    from grl_aecnn.sim.env import MECEnv

MODULES: dict[str, type[OffloadingRLModule]] = {"gcn": GCNOffloadingModule, "mlp": MLPOffloadingModule}


def module_dir(checkpoint: str | Path) -> Path:
    """The RLModule inside an RLlib algorithm checkpoint (our own training output)."""
    return Path(checkpoint) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID


def _space_shapes(space: gym.spaces.Dict) -> dict[str, list[int]]:
    return {key: list(sub.shape) for key, sub in space.spaces.items()}


def _space_from_shapes(shapes: dict[str, list[int]]) -> gym.spaces.Dict:
    return gym.spaces.Dict({key: gym.spaces.Box(-np.inf, np.inf, tuple(shape), np.float32)
                            for key, shape in shapes.items()})


def export_policy(checkpoint: str | Path, dest: str | Path, meta: dict[str, Any]) -> Path:
    """Write the module of an RLlib checkpoint as ``dest/{module.safetensors, policy.json}``."""
    module = RLModule.from_checkpoint(module_dir(checkpoint))
    kind = next(name for name, cls in MODULES.items() if isinstance(module, cls))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(dest / WEIGHTS))
    record = {
        "format": FORMAT_VERSION,
        "module": kind,
        "model_config": dict(module.model_config),
        "observation_shapes": _space_shapes(module.observation_space),
        "action_nvec": [int(n) for n in module.action_space.nvec],
        "checkpoint": str(Path(checkpoint).resolve()),
        **meta,
    }
    (dest / META).write_text(json.dumps(record, indent=2))
    return dest


class MaskedLogits(torch.nn.Module):
    """The module's own forward as a plain module (what `torch.jit.trace` takes), minus RLlib's
    per-call wrapping of `forward_inference`."""

    def __init__(self, module: OffloadingRLModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.module._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]


class RLlibPolicy:
    """A loaded GRL policy; answers the ``grl_aecnn.policies.base.Policy`` interface.

    ``critic``: how a bound policy picks its decision (default: the one in ``policy.json``)."""

    def __init__(self, module: OffloadingRLModule, name: str, meta: dict[str, Any],
                 critic: CriticConfig | None = None) -> None:
        self.module = module.eval()
        self.name = name
        self.meta = meta
        self.critic = CandidateCritic(critic or critic_from_meta(meta.get("critic")))
        self.env: MECEnv | None = None
        self._traced: torch.jit.ScriptModule | None = None

    def bind(self, env: "MECEnv") -> None:
        self.env = env

    @torch.inference_mode()
    def logits(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Masked logits ``(N_max, 1 + M_max*V)`` for one observation.

        The forward is traced on the first call (one TorchScript graph, as the export's fallback
        writes): at one observation per slot the eager network's cost is mostly Python
        dispatch, which the < 2 ms decision target cannot afford (bench/bench_policy.py). The
        trace holds no network size (the graph is built from the masks inside it), so it serves
        every size up to the padding; the weights of a loaded policy never change."""
        batch = {key: torch.as_tensor(value, dtype=torch.float32)[None] for key, value in obs.items()}
        if self._traced is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is kept for the export too
                self._traced = torch.jit.trace(MaskedLogits(self.module), (batch,), check_trace=False)
        return self._traced(batch).view(obs["action_mask"].shape)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        logits = self.logits(obs)
        env = self.env
        if env is None or not self.critic.critic.active:
            return logits.argmax(-1).numpy().astype(np.int64)
        return self.critic.choose(logits.numpy(), obs["action_mask"], env.scenario, env.points, env.estimated_state())

    def summary(self) -> dict[str, float]:
        return self.critic.summary() if self.critic.critic.active else {}


def load_rllib_policy(path: str | Path, name: str | None = None, critic: CriticConfig | None = None) -> RLlibPolicy:
    """Load an exported policy folder (see ``export_policy``)."""
    path = Path(path)
    meta_file = path / META
    if not meta_file.exists():
        raise FileNotFoundError(f"{path} is not an exported GRL policy (no {META})")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT_VERSION or meta.get("module") not in MODULES:
        raise ValueError(f"{meta_file}: unsupported policy format {meta.get('format')!r} / module {meta.get('module')!r}")
    module = MODULES[meta["module"]](
        observation_space=_space_from_shapes(meta["observation_shapes"]),
        action_space=gym.spaces.MultiDiscrete(meta["action_nvec"]),
        model_config=meta["model_config"],
        inference_only=True,
    )
    module.set_state(load_file(str(path / WEIGHTS)))  # ignores the critic's weights, fails on missing ones
    try:
        critic = critic or critic_from_meta(meta.get("critic"))
    except ValidationError as err:
        first = err.errors()[0]
        raise ValueError(f"{meta_file}: critic.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return RLlibPolicy(module, name or meta.get("name", path.name), meta, critic)


def make_policy(spec: "PolicySpec", env: "MECEnv") -> RLlibPolicy:
    """The registry's factory for kind "rllib" (``grl_aecnn.policies.registry.RLLIB_FACTORY``).

    The GCN reads N, M and V from the observation, so it serves any env with the same feature
    widths (other network sizes, even other padding); the MLP only its training shapes.
    ``spec.params["critic"]`` (a ``policy.critic`` mapping) overrides the recorded critic.
    """
    if not spec.path:
        raise ValueError(f"policy {spec.name!r}: kind 'rllib' needs an exported policy folder")
    critic = spec.params.get("critic")
    policy = load_rllib_policy(spec.path, spec.name, None if critic is None else CriticConfig.model_validate(critic))
    trained = policy.meta["observation_shapes"]
    offered = _space_shapes(env.observation_space)
    same = (lambda a, b: a == b) if policy.meta["module"] == "mlp" else (lambda a, b: a[-1:] == b[-1:])
    bad = sorted(key for key in trained if not same(trained[key], offered.get(key, [])))
    if bad:
        raise ValueError(f"policy {spec.name!r} was trained on observations {trained}; env {env.codecs} offers "
                         f"{offered} (mismatch in {', '.join(bad)})")
    return policy
