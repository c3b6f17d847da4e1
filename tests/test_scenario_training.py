"""A short PPO run over a scenario distribution: the policy trains on mixed network sizes and
conditions, then acts on two network sizes and reads the scenario context it was given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grl_aecnn.config import load_config
from grl_aecnn.profile import load_profile
from grl_aecnn.rl.policy import load_rllib_policy
from grl_aecnn.rl.train import PolicyRun, train_ppo
from grl_aecnn.sim.env import MECEnv

PROFILE_PATH = Path(__file__).parent / "fixtures" / "profile_small.json"
RANDOMISED = [
    "name=ppo-randomised",
    "scenario.num_devices=4",
    "scenario.num_servers=1",
    "scenario.max_devices=8",
    "scenario.max_servers=2",
    "scenario.episode_slots=10",
    "policy.ppo.iterations=2",
    "policy.ppo.train_batch_size=160",
    "policy.ppo.minibatch_size=80",
    "policy.ppo.num_epochs=2",
    "policy.ppo.num_envs_per_env_runner=8",
    "policy.ppo.hidden=16",
    "policy.train_scenarios={choices: {network: [2x1, 4x1, 8x2]}, ranges: {channel_est_error_db: [0.0, 5.0]}}",
]


def test_randomised_ppo_policy_acts_on_two_network_sizes(ray_local, tmp_path: Path) -> None:
    cfg = load_config("quick", RANDOMISED + [f"output_dir={tmp_path / 'out'}",
                                             f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    profile = load_profile(PROFILE_PATH)
    trained = train_ppo(cfg, profile, [PolicyRun("grl-aecnn", ("aecnn",))], cfg.stage_dir("policies"), resume=False)
    policy = load_rllib_policy(trained["grl-aecnn"].path)
    assert policy.meta["trained_on"]["train_scenarios"]["choices"]["network"] == ["2x1", "4x1", "8x2"]
    for n, m in ((3, 1), (8, 2)):
        scenario = cfg.scenario.model_copy(update={"num_devices": n, "num_servers": m})
        env = MECEnv(scenario, profile, ["aecnn"], seed=1)
        obs, _ = env.reset(seed=1)
        for _ in range(scenario.episode_slots):
            action = policy.act(obs)
            assert (action[n:] == 0).all()  # padding stays local
            obs, reward, *_ = env.step(action)  # the env rejects any masked action
            assert np.isfinite(reward)
    # The context is an input the policy reads: changing only the estimate quality changes its logits.
    obs, _ = MECEnv(cfg.scenario, profile, ["aecnn"], seed=2).reset(seed=2)
    blind, _ = MECEnv(cfg.scenario.model_copy(update={"channel_est_error_db": 5.0}), profile, ["aecnn"],
                      seed=2).reset(seed=2)
    assert not np.array_equal(obs["device"], blind["device"])
    assert not torch.equal(policy.logits(obs), policy.logits(blind))
