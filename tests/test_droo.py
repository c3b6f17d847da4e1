"""DROO-AECNN: quantisation, and that it learns on a small fixed scenario."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from grl_aecnn.evaluation.harness import run_policy
from grl_aecnn.policies.candidates import order_preserving
from grl_aecnn.policies.droo import DROOAgent, DROOPolicy, train_droo
from grl_aecnn.policies.registry import PolicySpec, register_policy_factory
from grl_aecnn.policies.settings import DROOConfig
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"
SMALL = ScenarioConfig(num_devices=4, num_servers=1, max_devices=4, max_servers=1, episode_slots=50,
                       bandwidth_hz=0.3e6, server_flops=20e9, channel_est_error_db=0.5,
                       capacity_lag_slots=0, capacity_est_noise=0.02)


def test_order_preserving_quantisation() -> None:
    logits = np.array([[0.0, 5.0, 1.0], [0.0, 0.2, 0.1], [3.0, 0.0, 0.0], [0.0, 9.0, 9.0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=np.float32)
    cands = order_preserving(logits, mask, 10)
    assert cands[0].tolist() == [1, 1, 0, 0]  # argmax within the mask
    # Least confident first: device 1 (gap 0.1), then device 2 (3.0), then device 0 (4.0).
    assert cands[1].tolist() == [1, 2, 0, 0]
    assert cands[2].tolist() == [1, 2, 1, 0]
    assert cands[3].tolist() == [2, 2, 1, 0]
    assert len(cands) == 4 and order_preserving(logits, mask, 2).shape == (2, 4)


def test_droo_learns_above_random(tmp_path: Path) -> None:
    profile = load_profile(PROFILE)
    cfg = DROOConfig(slots=600, hidden=[64, 64], lr=3e-3, training_interval=2)
    path = train_droo(SMALL, profile, ["aecnn"], cfg, tmp_path, seed=0)
    spec = PolicySpec("droo", "droo", path=str(path))
    droo = np.mean(run_policy(spec, SMALL, profile, 3, seed=1).episodes["reward"])
    rand = np.mean(run_policy(PolicySpec("random", "rule"), SMALL, profile, 3, seed=1).episodes["reward"])
    assert droo > rand + 0.1 * abs(rand), (droo, rand)
    # The network alone (K = 1, no candidate search) improved over its untrained self.
    meta = json.loads(path.with_name("droo.json").read_text())
    trained = DROOPolicy.load(path)
    untrained = DROOPolicy(DROOAgent(meta["in_dim"], meta["n_max"], meta["width"], cfg, seed=0), ["aecnn"])
    scores = []
    for i, policy in enumerate((trained, untrained)):
        policy.agent.k = 1
        register_policy_factory(f"droo-net-{i}", lambda spec, env, p=policy: p)
        scores.append(np.mean(run_policy(PolicySpec("n", f"droo-net-{i}"), SMALL, profile, 3, seed=1)
                              .episodes["reward"]))
    assert scores[0] > scores[1], scores
    assert DROOPolicy.load(path).codecs == ["aecnn"]
