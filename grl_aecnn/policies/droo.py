"""DROO-AECNN: DROO's deep-learning offloading extended to per-device categorical actions.

Per slot (Huang, Bi, Zhang, IEEE TMC 2020, revenol/DROO):
1. an MLP maps the flattened estimated state (the observation's device, server and edge
   features) to per-device logits over {local} + {server x operating point} (masked);
2. order-preserving quantisation into K candidates: candidate 0 is every device's most
   likely action; candidate k also switches the k least confident devices (smallest gap
   between their two most likely actions) to their second choice - DROO's thresholding at
   the entries closest to 0.5, for categorical outputs;
3. the candidates are scored with the system model on the *estimated* state (`env.evaluate`)
   and the best is played. While training, `sampled_candidates` more are drawn from the
   per-device softmax: with many actions per device, flipping to the second choice alone
   explores too little (our addition; DROO's outputs are binary);
4. (state, best action) goes into a replay memory (1024); every 10 slots the MLP trains on a
   batch of 128 with cross-entropy (DROO's BCE, categorical); K adapts to the largest recent
   best-candidate index + 2 over a window of 32 slots.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from grl_aecnn.policies.base import Observation
from grl_aecnn.policies.candidates import order_preserving, sampled
from grl_aecnn.policies.settings import DROOConfig

if TYPE_CHECKING:
    from grl_aecnn.profile import CodecProfile
    from grl_aecnn.sim.env import MECEnv
    from grl_aecnn.sim.settings import ScenarioConfig

STATE_KEYS = ("device", "server", "edge")
MASKED = -1e9


def flatten_obs(obs: Observation) -> np.ndarray:
    return np.concatenate([obs[k].ravel() for k in STATE_KEYS]).astype(np.float32)


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


class DROOAgent:
    """The MLP, replay memory and adaptive K; `decide` plays one slot, optionally learning."""

    def __init__(self, in_dim: int, n_max: int, width: int, cfg: DROOConfig, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.cfg, self.n_max, self.width = cfg, n_max, width
        self.net = mlp(in_dim, cfg.hidden, n_max * width)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.k_max = cfg.k_max or n_max + 1
        self.k = self.k_max
        self.k_hist: deque[int] = deque(maxlen=cfg.k_window)
        self.mem_x = np.zeros((cfg.memory_size, in_dim), np.float32)
        self.mem_a = np.zeros((cfg.memory_size, n_max), np.int64)
        self.mem_mask = np.zeros((cfg.memory_size, n_max, width), bool)
        self.mem_count = 0
        self.slots = 0
        self.losses: list[float] = []

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy(x)[None]).view(self.n_max, self.width).numpy()

    def decide(self, obs: Observation, env: "MECEnv", learn: bool = False) -> np.ndarray:
        x = flatten_obs(obs)
        mask = obs["action_mask"]
        logits = self.logits(x)
        cands = order_preserving(logits, mask, self.k)
        if learn and self.cfg.sampled_candidates:
            cands = np.concatenate([cands, sampled(logits, mask, self.cfg.sampled_candidates, self.rng)])
        best = int(np.argmax(env.evaluate(env.estimated_state(), cands)))
        if learn:
            self._remember(x, cands[best], mask > 0)
            self.k_hist.append(min(best, len(cands) - 1 - self.cfg.sampled_candidates))
            self.slots += 1
            if self.slots % self.cfg.k_window == 0:
                self.k = min(max(self.k_hist) + 2, self.k_max)
            if self.slots % self.cfg.training_interval == 0 and self.mem_count >= self.cfg.batch_size:
                self._train()
        return cands[best]

    def _remember(self, x: np.ndarray, action: np.ndarray, mask: np.ndarray) -> None:
        i = self.mem_count % self.cfg.memory_size
        self.mem_x[i], self.mem_a[i], self.mem_mask[i] = x, action, mask
        self.mem_count += 1

    def _train(self) -> None:
        size = min(self.mem_count, self.cfg.memory_size)
        idx = self.rng.choice(size, self.cfg.batch_size, replace=size < self.cfg.batch_size)
        logits = self.net(torch.from_numpy(self.mem_x[idx])).view(-1, self.n_max, self.width)
        logits = logits.masked_fill(~torch.from_numpy(self.mem_mask[idx]), MASKED)
        loss = nn.functional.cross_entropy(logits.reshape(-1, self.width),
                                           torch.from_numpy(self.mem_a[idx]).reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.losses.append(float(loss.detach()))


def train_droo(scenario: "ScenarioConfig", profile: "CodecProfile", codecs: list[str], cfg: DROOConfig,
               out_dir: Path, seed: int) -> Path:
    """Train DROO online on the simulator for `cfg.slots` slots; save and return the checkpoint
    (`<out_dir>/droo.safetensors` with `droo.json` beside it)."""
    import mlflow
    from tqdm import tqdm

    from grl_aecnn.sim.env import MECEnv

    env = MECEnv(scenario, profile, codecs=codecs, seed=seed)
    obs, _ = env.reset(seed=seed)
    agent = DROOAgent(flatten_obs(obs).size, scenario.max_devices, env.action_space.nvec[0], cfg, seed)
    rewards: list[float] = []
    episode = 0
    for slot in tqdm(range(cfg.slots), desc="droo", disable=None):
        obs, reward, _, truncated, _ = env.step(agent.decide(obs, env, learn=True))
        rewards.append(reward)
        if truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
        if mlflow.active_run() is not None and (slot + 1) % 100 == 0:
            mlflow.log_metrics({"droo_reward_100": float(np.mean(rewards[-100:])), "droo_k": agent.k,
                                "droo_loss": agent.losses[-1] if agent.losses else 0.0}, step=slot + 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "droo.safetensors"
    save_file({k: v.contiguous() for k, v in agent.net.state_dict().items()}, str(path))
    meta = {"in_dim": int(agent.mem_x.shape[1]), "n_max": agent.n_max, "width": int(agent.width),
            "hidden": list(cfg.hidden), "k": agent.k, "k_max": agent.k_max, "codecs": list(codecs),
            "points": list(env.points.ids), "slots": cfg.slots, "seed": seed,
            "reward_first_100": float(np.mean(rewards[:100])), "reward_last_100": float(np.mean(rewards[-100:]))}
    (out_dir / "droo.json").write_text(json.dumps(meta, indent=2))
    return path


class DROOPolicy:
    """A trained DROO-AECNN acting without learning (candidates still scored on estimates)."""

    def __init__(self, agent: DROOAgent, codecs: list[str], name: str = "droo-aecnn") -> None:
        self.agent, self.codecs, self.name = agent, codecs, name

    @classmethod
    def load(cls, path: str | Path, name: str = "droo-aecnn") -> "DROOPolicy":
        path = Path(path)
        meta = json.loads(path.with_name("droo.json").read_text())
        cfg = DROOConfig(hidden=meta["hidden"], k_max=meta["k_max"])
        agent = DROOAgent(meta["in_dim"], meta["n_max"], meta["width"], cfg)
        agent.net.load_state_dict(load_file(str(path)))
        agent.k = meta["k"]
        return cls(agent, meta["codecs"], name)

    def bind(self, env: "MECEnv") -> None:
        if env.action_space.nvec[0] != self.agent.width:
            raise ValueError(f"{self.name}: trained for {self.agent.width} actions per device, env has "
                             f"{env.action_space.nvec[0]} (codecs {env.codecs}, max_servers)")
        self.env = env

    def act(self, obs: Observation) -> np.ndarray:
        return self.agent.decide(obs, self.env)


