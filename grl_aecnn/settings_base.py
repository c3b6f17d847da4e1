"""Shared base for config sections (kept apart from `config` so stage settings avoid a cycle)."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors; values are re-validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
