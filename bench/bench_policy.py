"""Policy benchmarks: env steps/s with 1 vs 2 env runners, learner update time, decision time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_policy.py [--profile PATH] [--steps 4000]

Every figure comes from this one run on this machine (the quick preset's PPO settings, the
default 14x2 scenario padded to 32x4, GCN policy). Decision time is one ``act`` call of a
loaded policy on one observation, on one core (target < 2 ms at 14x2, < 4 ms at 30x4), for the
actor alone and with the model-based critic (``policy.critic``) picking among its candidates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from grl_aecnn.config import load_config
from grl_aecnn.policies.base import bind_policy
from grl_aecnn.policies.settings import ACTOR_ONLY, CriticConfig
from grl_aecnn.profile import load_profile
from grl_aecnn.rl.policy import MODULES, RLlibPolicy
from grl_aecnn.rl.train import ENV_NAME, PolicyRun, env_config, rllib_config
from grl_aecnn.rl.vector_env import MECVectorEnv, make_vector_env
from grl_aecnn.runtime import configure_process
from grl_aecnn.sim.env import MECEnv

DEFAULT_PROFILE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "profile_small.json"


def env_steps_per_s(env_cfg: dict, copies: int, slots: int) -> tuple[float, float]:
    """Raw simulator speed: ``copies`` single MECEnvs stepped in turn vs one vectorised env."""
    rng = np.random.default_rng(0)
    singles = [MECEnv.from_env_config(env_cfg) for _ in range(copies)]
    for i, env in enumerate(singles):
        env.reset(seed=i)
    start = time.perf_counter()
    for _ in range(slots):
        for env in singles:
            if env.step(np.zeros(env.action_space.shape, np.int64))[3]:
                env.reset()
    single = slots * copies / (time.perf_counter() - start)
    vector = MECVectorEnv(env_cfg, copies)
    vector.reset(seed=int(rng.integers(1000)))
    start = time.perf_counter()
    for _ in range(slots):
        vector.step(np.zeros(vector.action_space.shape, np.int64))
    return single, slots * copies / (time.perf_counter() - start)


def sampling_steps_per_s(cfg, env_cfg: dict, runners: int, steps: int) -> float:
    """RLlib sampling throughput (policy inference included) with ``runners`` env-runner actors."""
    cfg = cfg.model_copy(deep=True)
    cfg.policy.ppo.num_env_runners = runners
    algo = rllib_config(cfg, env_cfg).build_algo()
    try:
        group = algo.env_runner_group
        group.foreach_env_runner(lambda r: r.sample(num_timesteps=200), local_env_runner=False)  # warm up
        per_runner = steps // runners
        start = time.perf_counter()
        sampled = group.foreach_env_runner(lambda r: sum(len(e) for e in r.sample(num_timesteps=per_runner)),
                                           local_env_runner=False)
        return sum(sampled) / (time.perf_counter() - start)
    finally:
        algo.stop()


def learner_update_s(cfg, env_cfg: dict, iterations: int = 3) -> tuple[float, float]:
    """Seconds of one PPO learner update (train batch x epochs) and of one sampling phase."""
    algo = rllib_config(cfg, env_cfg).build_algo()
    try:
        learn, sample = [], []
        for _ in range(iterations):
            timers = algo.train()["timers"]
            learn.append(timers["learner_update_timer"])
            sample.append(timers["env_runner_sampling_timer"])
        return statistics.median(learn[1:]), statistics.median(sample[1:])
    finally:
        algo.stop()


def decision_ms(cfg, env_cfg: dict, critic: CriticConfig, slots: int = 500) -> tuple[float, float]:
    """Median and 90th percentile ms of one ``act`` at the configured network size (one thread),
    with ``critic`` picking among the actor's candidates (``ACTOR_ONLY``: the argmax)."""
    torch.set_num_threads(1)
    env = MECEnv.from_env_config(env_cfg)
    ppo = cfg.policy.ppo
    module = MODULES[ppo.model](observation_space=env.observation_space, action_space=env.action_space,
                                model_config={"hidden": ppo.hidden, "gcn_layers": ppo.gcn_layers,
                                              "mlp_layers": ppo.mlp_layers}, inference_only=True)
    policy = RLlibPolicy(module, "bench", {}, critic)
    bind_policy(policy, env)
    obs, _ = env.reset(seed=0)
    times = []
    for _ in range(slots):
        start = time.perf_counter()
        action = policy.act(obs)
        times.append((time.perf_counter() - start) * 1e3)
        obs, _, _, truncated, _ = env.step(action)
        if truncated:
            obs, _ = env.reset()
    times = times[20:]
    return statistics.median(times), float(np.percentile(times, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--steps", type=int, default=4000, help="env steps per sampling measurement")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    configure_process()

    import ray
    from ray.tune.registry import register_env

    cfg = load_config("quick", args.overrides)
    profile = load_profile(args.profile)
    env_cfg = env_config(cfg, profile, PolicyRun("grl-aecnn", ("aecnn",)))
    sc, ppo = cfg.scenario, cfg.policy.ppo
    print(f"scenario {sc.num_devices}x{sc.num_servers} padded to {sc.max_devices}x{sc.max_servers}, "
          f"codecs aecnn, model {ppo.model} hidden {ppo.hidden}; {ppo.num_envs_per_env_runner} env copies per runner")

    large = {**env_cfg, "scenario": {**env_cfg["scenario"], "num_devices": 30, "num_servers": 4}}
    cr = cfg.policy.critic
    for label, critic in (("actor alone", ACTOR_ONLY),
                          (f"actor + critic ({cr.order_preserving}+{cr.to_local}+{cr.sampled} candidates x {cr.samples} draws, "
                           f"{cr.polish} polish rounds)", cr)):
        for size, target, config in ((f"{sc.num_devices}x{sc.num_servers}", 2, env_cfg), ("30x4", 4, large)):
            median, p90 = decision_ms(cfg, config, critic)
            print(f"decision time per slot at {size}, {label} (act, 1 thread): median {median:.2f} ms, "
                  f"p90 {p90:.2f} ms (target < {target} ms)")
    fixed = {**env_cfg, "train_scenarios": {}}
    single, vector = env_steps_per_s(fixed, ppo.num_envs_per_env_runner, slots=200)
    _, drawn = env_steps_per_s(env_cfg, ppo.num_envs_per_env_runner, slots=200)
    print(f"simulator: {single:,.0f} env steps/s as {ppo.num_envs_per_env_runner} MECEnvs, {vector:,.0f} as one "
          f"vectorised env on one scenario (x{vector / single:.1f}), {drawn:,.0f} with a scenario drawn per copy "
          f"(policy.train_scenarios: one core per copy)")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, make_vector_env)
    learn, sample = learner_update_s(cfg, env_cfg)
    print(f"PPO iteration ({ppo.train_batch_size} steps, {ppo.num_epochs} epochs of minibatch "
          f"{ppo.minibatch_size}): learner update {learn:.2f} s "
          f"({learn / (ppo.num_epochs * ppo.train_batch_size / ppo.minibatch_size) * 1e3:.0f} ms per minibatch), "
          f"sampling {sample:.2f} s")
    one = sampling_steps_per_s(cfg, env_cfg, 1, args.steps)
    two = sampling_steps_per_s(cfg, env_cfg, 2, args.steps)
    print(f"RLlib sampling: {one:,.0f} env steps/s with 1 env runner, {two:,.0f} with 2 (ratio {two / one:.2f})")
    ray.shutdown()


if __name__ == "__main__":
    main()
