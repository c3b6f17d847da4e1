"""Config section `evaluation`: which policies to compare, on which scenario sweep."""

from __future__ import annotations

from pydantic import Field

from grl_aecnn.settings_base import Section


class EvaluationConfig(Section):
    episodes: int = Field(10, ge=1)
    slots_per_episode: int = Field(100, ge=1)
    sweep: str = Field("scenarios_default", description="Sweep file in tune_configs/ (name or path).")
