"""Simulator benchmark: prints one run's figures (1 thread; run with OMP_NUM_THREADS=1).

- task decisions per second per core of the vectorised core at B in {1, 64, 1024}
  (random actions, 14 devices x 2 servers, the default scenario and AECNN points);
- single-env Gymnasium step time; oracle solve time per slot at 14x2; DROO decision time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grl_aecnn.policies.base import bind_policy  # noqa: E402
from grl_aecnn.policies.droo import DROOAgent, DROOPolicy, flatten_obs  # noqa: E402
from grl_aecnn.policies.oracle import Oracle  # noqa: E402
from grl_aecnn.policies.rules import RandomPolicy  # noqa: E402
from grl_aecnn.policies.settings import DROOConfig  # noqa: E402
from grl_aecnn.profile import load_profile  # noqa: E402
from grl_aecnn.sim.core import VecMEC  # noqa: E402
from grl_aecnn.sim.env import MECEnv  # noqa: E402
from grl_aecnn.sim.points import point_table  # noqa: E402
from grl_aecnn.sim.settings import ScenarioConfig  # noqa: E402

PROFILE = ROOT / "tests" / "fixtures" / "profile_small.json"


def core_rate(sc: ScenarioConfig, batch: int, seconds: float = 2.0) -> tuple[float, float]:
    """Task decisions per second of wall time and per CPU second of this process (per core;
    the second figure is robust to other processes sharing the machine)."""
    pts = point_table(load_profile(PROFILE), sc.codecs)
    core = VecMEC(sc, batch=batch, seed=0)
    core.reset()
    rng = np.random.default_rng(0)
    width = 1 + sc.num_servers * pts.num
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        core.step(pts, rng.integers(0, width, (batch, sc.num_devices)))
        steps += 1
    decisions = steps * batch * sc.num_devices
    return decisions / (time.perf_counter() - start), decisions / (time.process_time() - cpu)


def per_slot_ms(env: MECEnv, policy, slots: int) -> tuple[float, float]:
    """(policy CPU ms per decision, env step CPU ms) over `slots` slots."""
    bind_policy(policy, env)
    obs, _ = env.reset(seed=0)
    t_act = t_step = 0.0  # CPU time of this process: robust to a shared machine
    for _ in range(slots):
        t0 = time.process_time()
        action = policy.act(obs)
        t1 = time.process_time()
        obs, _, _, truncated, _ = env.step(action)
        t_step += time.process_time() - t1
        t_act += t1 - t0
        if truncated:
            obs, _ = env.reset()
    return 1e3 * t_act / slots, 1e3 * t_step / slots


def main() -> None:
    sc = ScenarioConfig()
    profile = load_profile(PROFILE)
    for batch in (1, 64, 1024):
        wall, cpu = core_rate(sc, batch)
        print(f"core B={batch:5d}: {cpu:12,.0f} task decisions per CPU-second ({wall:,.0f}/s wall)")
    _, step_ms = per_slot_ms(MECEnv(sc, profile), RandomPolicy(), 500)
    print(f"gymnasium step (14x2, incl. observation): {1e3 * step_ms:.0f} us")
    all_codecs = sorted({p.codec for p in profile.points} - {"local"})
    for codecs in (["aecnn"], all_codecs):
        oracle = Oracle()
        ms, _ = per_slot_ms(MECEnv(sc, profile, codecs=codecs), oracle, 100)
        s = oracle.summary()
        print(f"oracle 14x2 codecs={'+'.join(codecs)}: {ms:.1f} ms/slot, exact on "
              f"{100 * s['oracle_exact_fraction']:.0f} % of slots, mean gap {100 * s['oracle_mean_gap']:.2f} %")
    env = MECEnv(sc, profile)
    obs, _ = env.reset(seed=0)
    agent = DROOAgent(flatten_obs(obs).size, sc.max_devices, int(env.action_space.nvec[0]), DROOConfig(), 0)
    agent.k = sc.num_devices + 1
    ms, _ = per_slot_ms(env, DROOPolicy(agent, ["aecnn"]), 200)
    print(f"droo decision 14x2 (K={agent.k}, MLP + candidate scoring): {ms:.2f} ms/slot")


if __name__ == "__main__":
    main()
