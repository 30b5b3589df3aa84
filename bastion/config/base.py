"""Building blocks shared by every config model: the strict base model, durations and control strictness.

Every security control field says how to compare two values of it (`stricter=`). That one annotation is what
lets `validate` find a route that is weaker than its class baseline, for any control, without per-control code.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# How a route's value of a control compares with its class baseline's:
#   "higher": a larger value is stricter (a minimum), "lower": a smaller value is stricter (a maximum),
#   "false": False is stricter (an opt-in to something risky),
#   "true": True is stricter, "subset": fewer items is stricter (an allowlist),
#   "superset": more items is stricter (a list of requirements), "order": later in `order` is stricter,
#   "free": any value is allowed (not a security control), "equal": any other value is weaker (no order
#   between values, e.g. which rule set runs). A field without `stricter` must stay equal too.
Strictness = Literal["higher", "lower", "true", "false", "subset", "superset", "order", "free", "equal"]


class Model(BaseModel):
    """Base of every config model: immutable, and unknown fields are errors (a typo must not disable a control)."""

    # hide_input_in_errors: a secret pasted into the wrong field never comes back in a validation message
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, hide_input_in_errors=True)


def control(
    default: Any,
    *,
    stricter: Strictness,
    description: str,
    order: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """A config field that is a security control, with how to tell a stricter value from a weaker one."""
    extra: dict[str, Any] = {"stricter": stricter}
    if order:
        extra["order"] = list(order)
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """`"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"90d"` or a number of seconds -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 250ms, 5m, 1h or 90d")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT[match.group(2)]
    raise ValueError("expected a duration such as 10s, 250ms, 5m, 1h or 90d")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


def parse_size(value: Any) -> Any:
    """`"1MiB"`, `"64KB"`, `"512"` or an int -> bytes (KB and MB are binary, as in nginx)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512, 64KiB or 1MiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            return int(match.group(1)) * _SIZE_UNIT[unit]
    raise ValueError("expected a size such as 512, 64KiB or 1MiB")


Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
