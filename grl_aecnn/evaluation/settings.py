"""Config section `evaluation`: which policies to compare, on which scenario sweep."""

from __future__ import annotations

from pydantic import Field

from grl_aecnn.settings_base import Section


class EvaluationConfig(Section):
    episodes: int = Field(10, ge=2, le=10**5, description="Seeded episodes per scenario (the same for every policy).")
    default_episodes: int | None = Field(
        None, ge=2, le=10**5, description="Episodes for the default scenario, the headline table (default: `episodes`); "
                                "more than the sweeps get narrows the confidence interval where it matters most.")
    slots_per_episode: int = Field(100, ge=1, le=10**6)
    sweep: str = Field("scenarios_default", description="Sweep file in tune_configs/ (name or path).")
    policies: list[str] | None = Field(
        None, description="Policy names to run (default: every rule, the oracle and all trained policies).")
    fixed_points: bool = Field(True, description="Run a fixed-point rule for every offered operating point.")
    oracle_codecs: list[str] | None = Field(
        None, description="Codecs the oracle may use (default: every codec in the profile).")
    oracle_method: str = Field("search", pattern="^(search|milp)$")
    robust_samples: int = Field(32, ge=1, le=4096, description="Robust planner: realisations drawn per slot (SAA).")
    subject: str = Field("grl-aecnn", description="The learned policy the generalisation table ranks.")
