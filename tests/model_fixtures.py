"""Small real artefacts for the MLflow Model, URI and export tests: an exported GRL policy
(random weights, through RLlib's own checkpoint and the project's export), a trained-shape
codec weights file, and simulator observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from grl_aecnn.codecs.store import build_codec, save_codec
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.env import MECEnv
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE_PATH = Path(__file__).parent / "fixtures" / "profile_small.json"
PROFILE = load_profile(PROFILE_PATH)
SCENARIO = ScenarioConfig(num_devices=14, num_servers=2, max_devices=16, max_servers=2)
SHAPE = (64, 8, 8)  # resnet18 stem at 32 px


def policy_env(codecs: tuple[str, ...] = ("aecnn",), scenario: ScenarioConfig = SCENARIO) -> MECEnv:
    return MECEnv(scenario.model_copy(update={"codecs": list(codecs)}), PROFILE, list(codecs))


def exported_policy(root: Path, name: str = "grl-aecnn", model: str = "gcn", codecs: tuple[str, ...] = ("aecnn",),
                    seed: int = 0) -> Path:
    """An RLlib module checkpoint of a random policy, exported by ``grl_aecnn.rl.policy.export_policy``."""
    from grl_aecnn.rl.policy import MODULES, export_policy, module_dir

    env = policy_env(codecs)
    torch.manual_seed(seed)
    module = MODULES[model](observation_space=env.observation_space, action_space=env.action_space,
                            model_config={"hidden": 16, "gcn_layers": 2, "mlp_layers": 2})
    checkpoint = root / f"{name}-checkpoint"
    module.save_to_path(module_dir(checkpoint))
    return export_policy(checkpoint, root / name, {"name": name, "codecs": list(codecs), "iterations": 3})


def observations(count: int, codecs: tuple[str, ...] = ("aecnn",), seed: int = 0,
                 scenario: ScenarioConfig = SCENARIO) -> list[dict[str, np.ndarray]]:
    """``count`` consecutive simulator observations under random allowed actions (new episodes as needed)."""
    env = policy_env(codecs, scenario)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for i in range(count):
        out.append(obs)
        action = np.array([rng.choice(np.flatnonzero(row > 0.5)) for row in obs["action_mask"]], dtype=np.int64)
        obs, _, _, truncated, _ = env.step(action)
        if truncated:
            obs, _ = env.reset(seed=seed + i + 1)
    return out


def batch(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: value[None] for key, value in obs.items()}


CODEC_SPECS = {
    "aecnn": {"codec": "aecnn", "id": "aecnn-k2-b4", "kept_channels": 2, "bits": 4, "channels": [3, 7], "width": 8,
              "scales": "calibrated", "clip_percentile": 99.5, "grid": 2},
    "bottlenetpp": {"codec": "bottlenetpp", "id": "bottlenetpp-c2", "channels": 2, "stride": 2, "width": 8,
                    "channel": "awgn", "max_noise": 0.1, "grid": 2},
    "deepjscc": {"codec": "deepjscc", "id": "deepjscc-c2", "channels": 2, "stride": 2, "width": 8,
                 "train_snr_db": 10.0},
}


def codec_blob(kind: str, z: torch.Tensor, tail: nn.Module | None = None) -> bytes:
    """A codec weights file (random weights; scales and entropy model fitted on ``z``)."""
    torch.manual_seed(0)
    spec = CODEC_SPECS[kind]
    codec = build_codec(spec, SHAPE).eval()
    codec.prepare(z)
    codec.finish(z)
    return save_codec(codec, spec, SHAPE, tail if tail is not None else nn.Sequential(), [])


def random_split_data(n: int = 48) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(ResNet-18 tail, stem split tensors of n random 32 px images, random labels), seeded."""
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.backbone.split import split_resnet

    torch.manual_seed(0)
    head, tail = split_resnet(build_model("resnet18", 10).eval(), "stem")
    with torch.no_grad():
        z = head(torch.randn(n, 3, 32, 32))
    return tail, z, torch.randint(0, 10, (n,))
