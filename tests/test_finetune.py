"""`--init-from`: PPO and codec trials start from trained weights (real RLlib algorithm, real codecs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from grl_aecnn.codecs.store import build_codec, init_codec
from grl_aecnn.config import ConfigError, load_config
from grl_aecnn.rl.finetune import check_compatible
from model_fixtures import CODEC_SPECS, PROFILE, SHAPE, codec_blob, exported_policy

SETTINGS = ["name=finetune", "scenario.num_devices=14", "scenario.num_servers=2", "scenario.max_devices=32",
            "scenario.max_servers=4", "policy.ppo.hidden=16", "policy.ppo.num_env_runners=0",
            "policy.ppo.num_envs_per_env_runner=1", "policy.ppo.train_batch_size=32", "policy.ppo.minibatch_size=16"]


def test_ppo_starts_from_the_exported_weights(ray_local, tmp_path: Path) -> None:
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.tune.registry import register_env

    from grl_aecnn.rl.train import ENV_NAME, PolicyRun, env_config, rllib_config
    from grl_aecnn.rl.vector_env import make_vector_env

    folder = exported_policy(tmp_path, seed=7)
    cfg = load_config("quick", [*SETTINGS, f"policy.ppo.init_from={folder}"])
    check_compatible(str(folder), cfg.policy.ppo)
    register_env(ENV_NAME, make_vector_env)
    exported = load_file(str(folder / "module.safetensors"))
    for codecs, starts_there in ((("aecnn",), True), (("bottlenetpp",), False)):
        algo = rllib_config(cfg, env_config(cfg, PROFILE, PolicyRun("p", codecs))).build_algo()
        try:
            learner = algo.learner_group._learner.module[DEFAULT_MODULE_ID].state_dict()
            runner = algo.env_runner.module.state_dict()
        finally:
            algo.stop()
        same = all(torch.equal(learner[k], exported[k]) for k in exported)
        assert same is starts_there  # only the policy of the exported codec set starts from it
        if starts_there:  # the env runner acts with the same weights (no value head there)
            assert all(torch.equal(runner[k], exported[k]) for k in runner)


def test_incompatible_policy_is_refused(tmp_path: Path) -> None:
    folder = exported_policy(tmp_path, model="mlp")
    with pytest.raises(ConfigError, match="holds a mlp policy; policy.ppo.model is gcn"):
        check_compatible(str(folder), load_config("quick", SETTINGS).policy.ppo)
    with pytest.raises(ConfigError, match="not an exported GRL policy"):
        check_compatible(str(tmp_path), load_config("quick", SETTINGS).policy.ppo)


def test_codec_trial_starts_from_a_trained_codec_of_the_same_shape() -> None:
    z = torch.rand(8, *SHAPE)
    blob = codec_blob("aecnn", z)
    torch.manual_seed(1)
    fresh = build_codec(CODEC_SPECS["aecnn"], SHAPE)
    assert init_codec(fresh, {**CODEC_SPECS["aecnn"], "id": "aecnn-k2-b4-ft"}, blob)
    trained = load(blob)
    # the weights and scales are the trained codec's; the entropy tables are refitted by training
    assert all(torch.equal(v, trained[f"codec.{k}"]) for k, v in fresh.state_dict().items() if k != "entropy.probs")
    assert fresh.symbols is None
    two_bits = {**CODEC_SPECS["aecnn"], "bits": 2}  # other entropy-table shape, same weights
    assert init_codec(build_codec(two_bits, SHAPE), two_bits, blob)
    other_bits = build_codec({**CODEC_SPECS["aecnn"], "channels": [1, 2, 3]}, SHAPE)
    before = {k: v.clone() for k, v in other_bits.state_dict().items()}
    assert not init_codec(other_bits, {**CODEC_SPECS["aecnn"], "channels": [1, 2, 3]}, blob)
    assert all(torch.equal(v, before[k]) for k, v in other_bits.state_dict().items())
    assert not init_codec(build_codec(CODEC_SPECS["deepjscc"], SHAPE), CODEC_SPECS["deepjscc"], blob)

