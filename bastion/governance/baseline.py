"""Effective policy of a route: its class baseline, tightened by the API and the route.

A layer (API or route `policy:`) may set any control; whether the result is weaker than the class is decided
per field by the `stricter=` annotation each control carries (see bastion.config.base.control).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bastion.config.models import SECTIONS, Baseline


@dataclass(frozen=True, slots=True)
class Weakening:
    """A control a route sets weaker than its class."""

    control: str  # "identity.required"
    origin: str  # "api:orders" or "route:orders/get-order"
    baseline: Any
    declared: Any


def merge(base: dict[str, Any], *layers: tuple[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Overlay policy layers on the baseline, section by section and field by field.

    Returns the merged plain data and, for each control id a layer set, the layer's origin.
    """
    merged = {section: dict(base.get(section, {})) for section in SECTIONS}
    sources: dict[str, str] = {}
    for origin, layer in layers:
        for section, fields in layer.items():
            if section not in merged or not isinstance(fields, dict):
                merged[section] = fields  # validation reports the unknown section or the wrong type
                continue
            for name, value in fields.items():
                merged[section][name] = value
                sources[f"{section}.{name}"] = origin
    return merged, sources


def _items(value: Any) -> list[Any]:
    return [_freeze(v) for v in (value or [])]


def _freeze(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _freeze(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    return value


def is_weaker(stricter: str | None, baseline: Any, declared: Any, order: list[str] | None = None) -> bool:
    """Whether `declared` is weaker than `baseline` for a control compared the `stricter` way."""
    if stricter == "free":
        return False
    if baseline == declared:
        return False
    if stricter == "true":
        return bool(baseline) and not declared
    if stricter == "false":
        return not baseline and bool(declared)
    if stricter == "higher":
        return declared is None or (baseline is not None and declared < baseline)
    if stricter == "lower":
        return declared is None or (baseline is not None and declared > baseline)
    if stricter == "subset":  # an allowlist: every declared item must be allowed by the baseline
        allowed = _items(baseline)
        return any(item not in allowed for item in _items(declared))
    if stricter == "superset":  # requirements: every baseline item must still be there
        kept = _items(declared)
        return any(item not in kept for item in _items(baseline))
    if stricter == "order" and order:
        return order.index(str(declared)) < order.index(str(baseline))
    return _freeze(baseline) != _freeze(declared)  # unannotated: must stay equal


def weakenings(baseline: Baseline, declared: Baseline, sources: dict[str, str]) -> list[Weakening]:
    """Every control `declared` sets weaker than `baseline`, with the layer that did it."""
    found = []
    for section in SECTIONS:
        base_section = getattr(baseline, section)
        decl_section = getattr(declared, section)
        for name, info in type(base_section).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            before, after = getattr(base_section, name), getattr(decl_section, name)
            if is_weaker(extra.get("stricter"), before, after, extra.get("order")):  # type: ignore[arg-type]
                control_id = f"{section}.{name}"
                found.append(Weakening(control_id, sources.get(control_id, "class"), before, after))
    return found


def restore(declared: dict[str, Any], baseline: dict[str, Any], controls: set[str]) -> dict[str, Any]:
    """`declared` with the given controls put back to their baseline values (an exception not in force)."""
    out = {section: dict(values) for section, values in declared.items()}
    for control_id in controls:
        section, name = control_id.split(".", 1)
        out[section][name] = baseline[section][name]
    return out
