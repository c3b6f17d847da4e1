"""Config section `policy.ppo`: RLlib PPO for the GRL policies."""

from __future__ import annotations

from pydantic import Field

from grl_aecnn.settings_base import Section


class PPOConfig(Section):
    iterations: int = Field(20, ge=1)
    num_env_runners: int = Field(1, ge=0)
    num_envs_per_env_runner: int = Field(8, ge=1)
