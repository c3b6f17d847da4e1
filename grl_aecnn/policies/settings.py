"""Config section `policy`: PPO (GRL policies, see grl_aecnn/rl/settings.py) and DROO."""

from __future__ import annotations

from pydantic import Field

from grl_aecnn.rl.settings import PPOConfig
from grl_aecnn.settings_base import Section


class DROOConfig(Section):
    slots: int = Field(2000, ge=1)


class PolicyConfig(Section):
    ppo: PPOConfig = PPOConfig()
    droo: DROOConfig = DROOConfig()
