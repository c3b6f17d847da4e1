"""Real PPO through Ray Tune on the simulator: learning, checkpoints, resume, loaded-policy inference.

One short training (tiny scenario, 0 env runners) is interrupted with SIGUSR1 (what Tune does
on Ctrl-C) after its first checkpoints, resumed, and then shared by the tests below.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.connectors.learner import (
    AddColumnsFromEpisodesToTrainBatch,
    AddOneTsToEpisodesAndTruncate,
    BatchIndividualItems,
)
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.tune.registry import register_env

from grl_aecnn import tracking
from grl_aecnn.config import ConfigError, load_config
from grl_aecnn.policies.rules import RandomPolicy
from grl_aecnn.profile import load_profile
from grl_aecnn.rl.learner import AddDeviceRewardsToTrainBatch, DeviceCreditPPOLearner
from grl_aecnn.rl.policy import load_rllib_policy, module_dir
from grl_aecnn.rl.train import ENV_NAME, PolicyRun, TrainingInterrupted, env_config, rllib_config, train_ppo
from grl_aecnn.rl.vector_env import DEVICE_REWARD, MECVectorEnv, make_vector_env
from grl_aecnn.sim.core import slot_outcome
from grl_aecnn.sim.env import MECEnv
from rllib_models.base import deciding_devices

PROFILE_PATH = Path(__file__).parent / "fixtures" / "profile_small.json"
ITERATIONS = 8
TINY = [
    "name=ppo-test",
    "scenario.num_devices=4",
    "scenario.num_servers=1",
    "scenario.episode_slots=25",
    f"policy.ppo.iterations={ITERATIONS}",
    "policy.ppo.train_batch_size=400",
    "policy.ppo.minibatch_size=100",
    "policy.ppo.num_envs_per_env_runner=8",
    "policy.ppo.num_env_runners=0",
    "policy.ppo.checkpoint_frequency=1",
    "policy.ppo.hidden=16",
    "policy.train_scenarios={}",  # this one scenario (the quick preset trains over a distribution)
]


def mean_slot_reward(policy, scenario, episodes: int = 4) -> float:
    """Average slot reward of ``policy`` on fixed seeded episodes (actions never change the draws)."""
    profile = load_profile(PROFILE_PATH)
    rewards = []
    for seed in range(episodes):
        env = MECEnv(scenario, profile, ["aecnn"], seed=10_000 + seed)
        obs, _ = env.reset(seed=10_000 + seed)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            rewards.append(reward)
            done = terminated or truncated
    return float(np.mean(rewards))


def interrupt_when(path_glob: tuple[Path, str], timeout_s: float = 300.0) -> threading.Thread:
    """Send SIGUSR1 to this process once a file matching the glob exists (Tune then stops gracefully)."""
    folder, pattern = path_glob

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if folder.exists() and any(folder.glob(pattern)):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config("quick", TINY + [f"output_dir={root / 'out'}", f"tracking.tracking_uri={uri}"])
    profile = load_profile(PROFILE_PATH)
    runs = [PolicyRun("grl-aecnn", ("aecnn",))]
    out = cfg.stage_dir("policies")
    trial_dir = out / "tune" / "ppo" / "grl-aecnn"

    watcher = interrupt_when((trial_dir, "checkpoint_000001"))
    with tracking.stage_run(cfg, "policies") as first_stage:
        with pytest.raises(TrainingInterrupted):
            train_ppo(cfg, profile, runs, out, resume=False)
    watcher.join()
    with tracking.stage_run(cfg, "policies") as stage:
        policies = train_ppo(cfg, profile, runs, out, resume=True)
    mlflow.set_tracking_uri(uri)
    return {"cfg": cfg, "policy": policies["grl-aecnn"], "trial_dir": trial_dir, "uri": uri,
            "stage_runs": (first_stage.info.run_id, stage.info.run_id)}


def test_resume_continues_the_iteration_count(trained) -> None:
    results = [json.loads(line) for line in (trained["trial_dir"] / "result.json").read_text().splitlines()]
    iterations = [r["training_iteration"] for r in results]
    last = results[-1]
    assert last["training_iteration"] == ITERATIONS == trained["policy"].iterations
    # The resumed attempt (a new Tune experiment) started after its checkpoint, not at iteration 1.
    assert 0 < last["iterations_since_restore"] < ITERATIONS
    assert 1 < iterations[0] and iterations == list(range(iterations[0], ITERATIONS + 1))


def test_ppo_improves_on_random(trained) -> None:
    cfg = trained["cfg"]
    results = [json.loads(line) for line in (trained["trial_dir"] / "result.json").read_text().splitlines()]
    returns = [r["env_runners"]["episode_return_mean"] for r in results]
    assert returns[-1] > returns[0]  # the sampling policy improved over its random start
    policy = load_rllib_policy(trained["policy"].path)
    assert mean_slot_reward(policy, cfg.scenario) > mean_slot_reward(RandomPolicy(seed=0), cfg.scenario) + 0.1


def test_checkpoint_restores_the_same_action_distribution(trained) -> None:
    checkpoint = trained["policy"].checkpoint
    env = MECVectorEnv(MECEnv.env_config(trained["cfg"].scenario, PROFILE_PATH, ["aecnn"]), num_envs=16)
    obs, _ = env.reset(seed=3)
    batch = {Columns.OBS: {k: torch.from_numpy(v) for k, v in obs.items()}}
    algo = Algorithm.from_checkpoint(str(checkpoint))
    try:
        from_algo = algo.get_module().forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    finally:
        algo.stop()
    from_module = RLModule.from_checkpoint(module_dir(checkpoint)).forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    exported = load_rllib_policy(trained["policy"].path).module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(from_module, from_algo)
    torch.testing.assert_close(exported, from_algo)


def test_loaded_policy_acts_like_rllib_greedy(trained) -> None:
    policy = load_rllib_policy(trained["policy"].path)
    module = RLModule.from_checkpoint(module_dir(trained["policy"].checkpoint))
    env = MECEnv(trained["cfg"].scenario, load_profile(PROFILE_PATH), ["aecnn"], seed=5)
    obs, _ = env.reset(seed=5)
    for _ in range(10):
        batch = {Columns.OBS: {k: torch.from_numpy(v)[None] for k, v in obs.items()}}
        logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        greedy = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic().sample()[0]
        action = policy.act(obs)
        assert action.dtype == np.int64 and action.shape == (obs["device_mask"].shape[0],)
        np.testing.assert_array_equal(action, greedy.numpy())
        obs, *_ = env.step(action)  # the env rejects any masked action


@pytest.mark.parametrize("devices, servers", [(6, 1), (30, 4)])
def test_policy_serves_other_network_sizes(trained, devices: int, servers: int) -> None:
    """Trained at 4x1, acts validly unchanged at 6x1 and 30x4 (same 32x4 padding; the env rejects a
    masked action), and every slot's reward counts exactly the real devices with a task: between all
    of them late (-psi each) and all on time at the best accuracy."""
    scenario = trained["cfg"].scenario.model_copy(update={"num_devices": devices, "num_servers": servers})
    policy = load_rllib_policy(trained["policy"].path)
    profile = load_profile(PROFILE_PATH)
    best = max(p.accuracy for p in profile.points)
    env = MECEnv(scenario, profile, ["aecnn"], seed=7)
    obs, _ = env.reset(seed=7)
    for _ in range(scenario.episode_slots):
        tasks = int(((obs["device_mask"] > 0.5) & (obs["action_mask"][:, 1:] > 0.5).any(-1)).sum())
        assert tasks <= devices
        obs, reward, *_ = env.step(policy.act(obs))
        assert -scenario.penalty * tasks - 1e-9 <= reward <= best * tasks + 1e-9


def test_iterations_are_logged_to_mlflow_under_the_stage_run(trained) -> None:
    client = mlflow.MlflowClient(trained["uri"])
    runs = client.search_runs(
        [client.get_experiment_by_name(trained["cfg"].tracking.experiment).experiment_id],
        filter_string="tags.`grl_aecnn.policy` = 'grl-aecnn'",
    )
    parents = {run.data.tags.get("mlflow.parentRunId") for run in runs}
    # the resumed attempt went on logging to the policy's run (under the first attempt's stage run)
    assert len(runs) == 1 and parents == {trained["stage_runs"][0]}
    resumed = runs[0]
    for key in ("episode_return_mean", "accuracy", "success_rate", "throughput", "env_steps_per_s", "policy_loss"):
        assert key in resumed.data.metrics, key
    history = client.get_metric_history(resumed.info.run_id, "episode_return_mean")
    assert max(m.step for m in history) == ITERATIONS


def test_vector_env_matches_single_env() -> None:
    """The vectorised training env is MECEnv: same observations, rewards, infos and episode ends."""
    cfg = load_config("quick", TINY)
    env_config = MECEnv.env_config(cfg.scenario.model_copy(update={"episode_slots": 5}), PROFILE_PATH, ["aecnn"])
    single, vector = MECEnv.from_env_config(env_config), MECVectorEnv(env_config, num_envs=1)
    obs, _ = single.reset(seed=7)
    vobs, _ = vector.reset(seed=7)
    policy = RandomPolicy(seed=1)
    for _ in range(12):
        for key in obs:
            np.testing.assert_array_equal(vobs[key][0], obs[key])
        action = policy.act(obs)
        obs, reward, _, truncated, info = single.step(action)
        vobs, vreward, _, vtruncated, vinfo = vector.step(action[None])
        assert vreward[0] == reward and vtruncated[0] == truncated
        assert {k: vinfo[k][0] for k in info} == info
        device_reward = vinfo[DEVICE_REWARD][0]  # padded to N_max with zeros
        np.testing.assert_array_equal(device_reward[: cfg.scenario.num_devices], single.last_outcome.reward[0])
        assert device_reward.shape == (cfg.scenario.max_devices,) and not device_reward[cfg.scenario.num_devices:].any()
        assert device_reward.sum() == pytest.approx(reward)
        if truncated:  # Gymnasium next-step autoreset: the vector env resets on the following step
            obs, _ = single.reset()
            vobs, vreward, *_ = vector.step(action[None])
            assert vreward[0] == 0


def test_difference_credit_is_each_devices_marginal_contribution() -> None:
    """With credit 'difference' a device's reward column is the slot reward minus the slot
    reward had it alone run locally, on the realised state the step used."""
    cfg = load_config("quick", TINY)
    env_config = {**MECEnv.env_config(cfg.scenario, PROFILE_PATH, ["aecnn"]), "credit": "difference"}
    vector = MECVectorEnv(env_config, num_envs=1)
    obs, _ = vector.reset(seed=3)
    policy, n, offloads = RandomPolicy(seed=2), cfg.scenario.num_devices, 0
    for _ in range(8):
        core = vector.cores[0][1]
        state, action = core.realised(), policy.act({k: v[0] for k, v in obs.items()})
        obs, reward, _, _, info = vector.step(action[None])
        for device in range(n):
            alone = action[None, :n].copy()
            alone[0, device] = 0
            without = slot_outcome(core.sc, vector.points, state, alone).reward.sum()
            assert info[DEVICE_REWARD][0, device] == pytest.approx(reward[0] - without)
        offloads += int((action[:n] > 0).sum())
    assert offloads > 0


def tiny_rllib_config(*overrides: str) -> RLlibPPOConfig:
    cfg = load_config("quick", TINY + list(overrides))
    register_env(ENV_NAME, make_vector_env)
    return rllib_config(cfg, env_config(cfg, load_profile(PROFILE_PATH), PolicyRun("grl-aecnn", ("aecnn",))))


def test_config_rejects_device_credit_with_discounting() -> None:
    with pytest.raises(ConfigError, match="credit='difference' needs gamma == 0"):
        load_config("quick", TINY + ["policy.ppo.gamma=0.9"])
    with pytest.raises(ConfigError, match="credit='device' needs gamma == 0"):
        load_config("quick", TINY + ["policy.ppo.gamma=0.9", "policy.ppo.credit=device"])
    assert load_config("quick", TINY + ["policy.ppo.gamma=0.9", "policy.ppo.credit=slot"]).policy.ppo.gamma == 0.9
    assert tiny_rllib_config().learner_class is DeviceCreditPPOLearner
    assert tiny_rllib_config("policy.ppo.credit=slot").learner_class is not DeviceCreditPPOLearner


def test_device_rewards_reach_the_train_batch_step_aligned() -> None:
    """Each train-batch row gets the device rewards of its own step, also across an episode end
    and in chunks that continue an earlier sample: they sum to the row's reward."""
    runner = SingleAgentEnvRunner(config=tiny_rllib_config("policy.ppo.credit=device"))  # 8 copies, 25-slot episodes
    episodes = runner.sample(num_timesteps=8 * 27, explore=True)
    continued = runner.sample(num_timesteps=16, explore=True)
    assert any(episode.is_done for episode in episodes) and any(episode.t_started > 0 for episode in continued)
    batch, shared = {}, {}
    for connector in (AddOneTsToEpisodesAndTruncate(), AddDeviceRewardsToTrainBatch(),
                      AddColumnsFromEpisodesToTrainBatch(), BatchIndividualItems()):
        batch = connector(rl_module=runner.module, batch=batch, episodes=episodes + continued, shared_data=shared)
    valid = batch[Columns.LOSS_MASK]
    assert valid.sum() == 8 * 27 + 16 and batch[DEVICE_REWARD].shape == (valid.size, 32)
    np.testing.assert_allclose(batch[DEVICE_REWARD][valid].sum(-1), batch[Columns.REWARDS][valid], atol=1e-5)
    assert not batch[DEVICE_REWARD][:, 4:].any()  # 4 real devices
    runner.stop()


def test_device_credit_loss_ignores_devices_without_a_choice() -> None:
    """Padded devices, devices without a task and loss-masked steps do not change the loss;
    a deciding device's reward does."""
    env = MECVectorEnv(MECEnv.env_config(load_config("quick", TINY).scenario, PROFILE_PATH, ["aecnn"]), num_envs=32)
    learner = tiny_rllib_config().build_learner(
        spaces={DEFAULT_MODULE_ID: (env.single_observation_space, env.single_action_space)})
    module = learner.module[DEFAULT_MODULE_ID]
    obs, _ = env.reset(seed=0)
    obs = {key: torch.from_numpy(value) for key, value in obs.items()}
    with torch.no_grad():
        dist_inputs = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    actions = module.get_exploration_action_dist_cls().from_logits(dist_inputs).sample()
    info = env.step(actions.numpy())[-1]
    loss_mask = torch.ones(32, dtype=torch.bool)
    loss_mask[-1] = False
    batch = {Columns.OBS: obs, Columns.ACTIONS: actions, Columns.ACTION_DIST_INPUTS: dist_inputs,
             Columns.LOSS_MASK: loss_mask, DEVICE_REWARD: torch.from_numpy(info[DEVICE_REWARD]).float()}

    def loss(device_reward: torch.Tensor) -> torch.Tensor:
        changed = {**batch, DEVICE_REWARD: device_reward}
        return learner.compute_loss_for_module(
            module_id=DEFAULT_MODULE_ID, config=learner.config.get_config_for_module(DEFAULT_MODULE_ID),
            batch=changed, fwd_out=module.forward_train(changed)).detach()

    deciding = deciding_devices(obs) & loss_mask[:, None]
    real_without_task = (obs["device_mask"] > 0.5) & ~deciding_devices(obs)
    assert real_without_task.any() and deciding.any()
    reference = loss(batch[DEVICE_REWARD])
    noise = 3.0 * torch.randn(batch[DEVICE_REWARD].shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss(batch[DEVICE_REWARD] + torch.where(deciding, 0.0, noise)), reference)
    assert not torch.allclose(loss(batch[DEVICE_REWARD] + torch.where(deciding, noise, 0.0)), reference)
