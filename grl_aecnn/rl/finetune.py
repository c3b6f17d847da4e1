"""Fine-tuning: PPO starts from the weights of an exported GRL policy (``policy.ppo.init_from``).

RLlib builds the module from the config, then ``on_algorithm_init`` (below) loads the
exported ``module.safetensors`` into every learner's module and pushes the weights to the env
runners, before the first iteration. A restored (resumed) trial loads its own checkpoint after
this, so resuming a fine-tuning run continues it rather than starting it over. Only trials with
the exported policy's codec set start from it; the others train from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file

from grl_aecnn.config import ConfigError
from grl_aecnn.models.policy_net import WEIGHTS, PolicyFormatError, read_meta

if TYPE_CHECKING:
    from grl_aecnn.rl.settings import PPOConfig

# The model settings that fix the module's layer shapes, per model kind.
SHAPE_SETTINGS = {"gcn": ("hidden", "gcn_layers"), "mlp": ("hidden", "mlp_layers")}


def check_compatible(folder: str, ppo: "PPOConfig") -> None:
    """ConfigError unless the exported policy in ``folder`` has this config's model and widths."""
    try:
        meta = read_meta(folder)
    except PolicyFormatError as err:
        raise ConfigError(f"--init-from: {err}") from None
    if meta["module"] != ppo.model:
        raise ConfigError(f"--init-from: {folder} holds a {meta['module']} policy; policy.ppo.model is {ppo.model}")
    for key in SHAPE_SETTINGS[ppo.model]:
        if key in meta["model_config"] and meta["model_config"][key] != getattr(ppo, key):
            raise ConfigError(f"--init-from: {folder} was trained with policy.ppo.{key}={meta['model_config'][key]}, "
                              f"this config has {getattr(ppo, key)}; set --set policy.ppo.{key}=...")


def load_initial_weights(folder: str, *, algorithm: Any, **kwargs: Any) -> None:
    """RLlib ``on_algorithm_init`` callback (bound to ``folder`` with functools.partial)."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    meta = read_meta(folder)
    codecs = list(algorithm.config.env_config["codecs"])
    if sorted(meta.get("codecs", [])) != sorted(codecs):
        print(f"[ppo] {algorithm.config.env_config['policy']}: not initialised from {folder} "
              f"(trained for codecs {meta.get('codecs')}, this policy offloads with {codecs})")
        return
    state = load_file(str(Path(folder) / WEIGHTS))
    algorithm.learner_group.foreach_learner(lambda learner: learner.module[DEFAULT_MODULE_ID].set_state(state))
    algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                            inference_only=True)
    print(f"[ppo] {algorithm.config.env_config['policy']}: starting from the weights in {folder}")
