"""A distribution over scenarios, for training policies that must hold up as conditions change.

Config (``policy.train_scenarios``): ``ranges`` draw a field uniformly from ``[low, high]``
(integers for integer fields), ``choices`` pick one listed value; the key ``network`` takes
``"NxM"`` strings and sets devices and servers together. Fields not named keep the base
scenario's value, and the observation padding (``max_devices``, ``max_servers``) always stays
the base's, so one policy serves every drawn network. A draw that breaks a scenario rule
(e.g. ``deadline_min_s > deadline_max_s``) is redrawn; a distribution that rarely yields a
valid scenario is rejected when the config is loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, ValidationError, model_validator

from grl_aecnn.settings_base import Section
from grl_aecnn.sim.settings import ScenarioConfig

NETWORK = "network"  # "NxM": N devices and M servers at once
FIXED = ("max_devices", "max_servers", "codecs", "episode_slots")  # never drawn
MAX_TRIES = 100


def parse_network(value: Any) -> tuple[int, int]:
    """"30x4" -> (30, 4)."""
    try:
        n, m = (int(x) for x in str(value).lower().split("x"))
    except ValueError:
        raise ValueError(f"{NETWORK}: {value!r} is not of the form NxM, e.g. 30x4") from None
    return n, m


def with_changes(base: ScenarioConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """The base scenario's fields with `changes` applied (`network` sets devices and servers);
    not yet validated."""
    data = base.model_dump()
    for key, value in changes.items():
        if key == NETWORK:
            data["num_devices"], data["num_servers"] = parse_network(value)
        else:
            data[key] = value
    return data


class ScenarioDistribution(Section):
    ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="field: [low, high], drawn uniformly (integer fields: integers).")
    choices: dict[str, list[Any]] = Field(
        default_factory=dict, description="field: [values...], one drawn uniformly; 'network': ['NxM', ...].")

    @model_validator(mode="after")
    def _known_fields(self) -> "ScenarioDistribution":
        allowed = set(ScenarioConfig.model_fields) - set(FIXED)
        for section, keys in (("ranges", self.ranges), ("choices", set(self.choices) - {NETWORK})):
            unknown = sorted(set(keys) - allowed)
            if unknown:
                raise ValueError(f"{section}: {unknown} are not drawable scenario fields (allowed: {sorted(allowed)})")
        both = sorted(set(self.ranges) & set(self.choices))
        if both:
            raise ValueError(f"{both} are given both a range and choices")
        for key, (low, high) in self.ranges.items():
            if not low <= high:
                raise ValueError(f"ranges.{key}: low {low} exceeds high {high}")
        for key, values in self.choices.items():
            if not values:
                raise ValueError(f"choices.{key}: empty list")
        for value in self.choices.get(NETWORK, []):
            parse_network(value)
        return self

    @property
    def empty(self) -> bool:
        return not self.ranges and not self.choices

    def fields(self) -> set[str]:
        """The scenario fields this distribution varies."""
        named = set(self.ranges) | set(self.choices) - {NETWORK}
        return named | ({"num_devices", "num_servers"} if NETWORK in self.choices else set())

    def contains(self, sc: ScenarioConfig, base: ScenarioConfig) -> bool:
        """Whether `sc` is a scenario this distribution can draw around `base`."""
        for key in ScenarioConfig.model_fields:
            if key in FIXED or key in self.fields():
                continue
            if getattr(sc, key) != getattr(base, key):
                return False
        for key, (low, high) in self.ranges.items():
            if not low - 1e-12 <= getattr(sc, key) <= high + 1e-12:
                return False
        for key, values in self.choices.items():
            current = (sc.num_devices, sc.num_servers) if key == NETWORK else getattr(sc, key)
            options = [parse_network(v) for v in values] if key == NETWORK else values
            if current not in options:
                return False
        return True


class ScenarioSampler:
    """Draws validated scenarios around a base from a `ScenarioDistribution`."""

    def __init__(self, base: ScenarioConfig, dist: ScenarioDistribution) -> None:
        self.base, self.dist = base, dist

    def draw(self, rng: np.random.Generator) -> ScenarioConfig:
        """One scenario; raises ValueError naming the last rule broken after MAX_TRIES draws."""
        error = ""
        for _ in range(MAX_TRIES):
            changes: dict[str, Any] = {}
            for key, (low, high) in self.dist.ranges.items():
                integer = ScenarioConfig.model_fields[key].annotation is int
                changes[key] = int(rng.integers(int(low), int(high) + 1)) if integer else float(rng.uniform(low, high))
            for key, values in self.dist.choices.items():
                changes[key] = values[int(rng.integers(len(values)))]
            try:
                return ScenarioConfig.model_validate(with_changes(self.base, changes))
            except ValidationError as exc:
                error = exc.errors()[0]["msg"]
        raise ValueError(f"train_scenarios: no valid scenario in {MAX_TRIES} draws (last: {error})")


def check_distribution(base: ScenarioConfig, dist: ScenarioDistribution, draws: int = 64) -> None:
    """Config-time check: the distribution yields valid scenarios that fit the padding."""
    sizes = [parse_network(v) for v in dist.choices.get(NETWORK, [])]
    sizes += [(int(dist.ranges.get("num_devices", (0, 0))[1]), int(dist.ranges.get("num_servers", (0, 0))[1]))]
    for n, m in sizes:
        if n > base.max_devices or m > base.max_servers:
            raise ValueError(f"train_scenarios: a {n}x{m} network exceeds the padding "
                             f"{base.max_devices}x{base.max_servers} (scenario.max_devices/max_servers)")
    sampler = ScenarioSampler(base, dist)
    rng = np.random.default_rng(0)
    for _ in range(draws):
        sampler.draw(rng)
