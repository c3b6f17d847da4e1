"""Config section `policy`: PPO (GRL policies, see grl_aecnn/rl/settings.py) and DROO."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from grl_aecnn.rl.settings import PPOConfig
from grl_aecnn.settings_base import Section
from grl_aecnn.sim.scenarios import ScenarioDistribution


class DROOConfig(Section):
    """DROO-AECNN (Huang et al. 2020; defaults from revenol/DROO except where noted)."""

    slots: int = Field(2000, ge=1, le=10**8, description="Online training slots.")
    hidden: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        [256, 256], min_length=1, max_length=16, description="MLP widths, each 1..65536 (DROO: 120, 80 for N=10).")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate (DROO used 1e-2 with binary outputs).")
    memory_size: int = Field(1024, ge=1, le=10**7)
    batch_size: int = Field(128, ge=1, le=10**6)
    training_interval: int = Field(10, ge=1, le=10**6)
    k_window: int = Field(32, ge=1, le=10**6, description="Adaptive K: window (Delta) over recent best candidate indices.")
    sampled_candidates: int = Field(8, ge=0, le=10**4, description="Extra training candidates sampled from the softmax.")
    k_max: int | None = Field(None, ge=1, le=10**4, description="Most candidates per slot (default: devices + 1).")


class PolicyConfig(Section):
    ppo: PPOConfig = PPOConfig()
    droo: DROOConfig = DROOConfig()
    train_scenarios: ScenarioDistribution = Field(
        default_factory=ScenarioDistribution,
        description="Scenarios the GRL policies train over (each simulator copy draws one per episode); "
                    "empty: the configured scenario alone.")
