"""Config section `scenario`: the MEC system model (see docs/system-model.md)."""

from __future__ import annotations

from pydantic import Field

from grl_aecnn.settings_base import Section


class ScenarioConfig(Section):
    num_devices: int = Field(14, ge=1)
    num_servers: int = Field(2, ge=1)
    max_devices: int = Field(32, ge=1, description="Observation padding: largest network a policy serves.")
    max_servers: int = Field(4, ge=1)
    codecs: list[str] = Field(["aecnn"], min_length=1, description="Profile codecs offered as offloading points.")
