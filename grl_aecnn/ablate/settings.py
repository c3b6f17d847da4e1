"""Ablation files (`tune_configs/ablate_<name>.yaml`): which mechanism, which rows, how many
seeds, at which operating point, and the codec training budget every row shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from grl_aecnn.config import PRESET_DIR, ConfigError, _flatten, _format_validation_error, one_line
from grl_aecnn.input_files import BadFile, load_yaml, read_text
from grl_aecnn.settings_base import Section

PREFIX = "ablate_"
MAX_BYTES = 64 * 1024

# Rows each mechanism can compare; the first is the paper's mechanism (the reference row).
ROWS: dict[str, tuple[str, ...]] = {
    "selection": ("cbam", "refined", "se", "l1", "variance", "random"),
    "recovery": ("learned", "zero", "mean"),
    "entropy": ("context", "cell", "channel", "raw"),
    "schedule": ("staged", "end_to_end"),
}
Mechanism = Literal["selection", "recovery", "entropy", "schedule"]


class AblationConfig(Section):
    mechanism: Mechanism = Field(description="What is ablated: selection, recovery, entropy or schedule.")
    rows: list[str] | None = Field(None, validate_default=True, description="Rows to compare (default: all of the mechanism); "
                                                     "must include the paper's mechanism.")
    seeds: int = Field(3, ge=2, le=100, description="Seeds per row, 2..100 (a CI95 needs at least 2).")
    kept_channels: int = Field(4, ge=1, le=4096, description="AECNN channels kept in every row.")
    bits: int = Field(2, ge=1, le=16, description="AECNN quantiser bits in every row, 1..16.")
    codecs: dict[str, Any] = Field({}, description="Overrides of the experiment's `codecs` section: the "
                                                   "training budget all rows share (e.g. train_samples, schedule).")

    @field_validator("rows")
    @classmethod
    def _rows_of_mechanism(cls, rows: list[str] | None, info: ValidationInfo) -> list[str]:
        """The mechanism's rows, the paper's first (the reference of every difference)."""
        mechanism = info.data.get("mechanism")
        if mechanism is None:  # already reported
            return rows or []
        allowed = ROWS[mechanism]
        rows = list(allowed) if rows is None else rows
        unknown = [r for r in rows if r not in allowed]
        if unknown or len(set(rows)) != len(rows) or allowed[0] not in rows:
            raise ValueError(f"{rows} must be distinct rows of {mechanism} ({', '.join(allowed)}) "
                             f"including the paper's {allowed[0]!r}")
        return [allowed[0], *[r for r in rows if r != allowed[0]]]

    @property
    def paper(self) -> str:
        return ROWS[self.mechanism][0]

    def overrides(self) -> list[str]:
        """`--set` overrides that put the experiment config at this ablation's point and budget."""
        fixed = {"train": ["aecnn"], "aecnn.kept_channels": [self.kept_channels], "aecnn.bits": [self.bits]}
        return [f"codecs.{k}={json.dumps(v)}" for k, v in {**_flatten(self.codecs), **fixed}.items()]


def ablation_names() -> list[str]:
    return sorted(p.stem.removeprefix(PREFIX) for p in PRESET_DIR.glob(f"{PREFIX}*.yaml"))


def ablation_path(name_or_path: str) -> Path:
    """`tune_configs/ablate_<name>.yaml`, or a YAML path; ConfigError naming the choices otherwise."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"ablation file not found: {path}")
        return path
    preset = PRESET_DIR / f"{PREFIX}{name_or_path}.yaml"
    if not preset.is_file():
        raise ConfigError(f"unknown ablation {name_or_path!r}: use one of {', '.join(ablation_names())} "
                          f"or a YAML path")
    return preset


def load_ablation(name_or_path: str) -> tuple[str, AblationConfig]:
    """(name, validated config) of an ablation file; ConfigError (one line, naming the file) on any fault."""
    path = ablation_path(name_or_path)
    try:
        tree = load_yaml(read_text(path, "ablation file", MAX_BYTES)) or {}
    except BadFile as err:
        raise ConfigError(one_line(err)) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping (mechanism, rows, seeds, ...)")
    unknown = sorted(set(map(str, tree)) - set(AblationConfig.model_fields))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key; allowed keys: {', '.join(AblationConfig.model_fields)}")
    try:
        cfg = AblationConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(one_line(f"{path}: {_format_validation_error(err)}")) from None
    return path.stem.removeprefix(PREFIX), cfg
