"""Shared base for config sections (kept apart from `config` so stage settings avoid a cycle)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

MAX_SEED = 2**32 - 1  # numpy's and Ray's seed range


def _int_not_bool(annotation: Any) -> bool:
    """Whether a field's annotation takes ints (directly, optionally or as list items) but not bools."""
    if annotation is int:
        return True
    if annotation is bool or isinstance(annotation, type):
        return False
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _int_not_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        args = typing.get_args(annotation)
        return bool not in args and any(_int_not_bool(a) for a in args)
    return False


class Section(BaseModel):
    """Unknown keys are errors; values are re-validated on assignment; infinite and NaN floats
    are rejected everywhere, and so is ``true`` where an integer is expected (pydantic reads it as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_int(cls, value: Any, info: ValidationInfo) -> Any:
        flags = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in flags) and _int_not_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected an integer, not a boolean (got {value!r})")
        return value
