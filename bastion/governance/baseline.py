"""Effective policy of a route: its class baseline, tightened by the API and the route.

A layer (API or route `policy:`) may set any control; whether the result is weaker than the class is decided
per field by the `stricter=` annotation each control carries (see bastion.config.base.control).
"""

from __future__ import annotations

import copy
import ipaddress
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
    """Overlay policy layers on the baseline, section by section and field by field (nested models too).

    Returns the merged plain data and, for each control id a layer set, the layer's origin.
    """
    merged = {section: copy.deepcopy(base.get(section, {})) for section in SECTIONS}
    sources: dict[str, str] = {}
    for origin, layer in layers:
        for section, fields in layer.items():
            if section not in merged or not isinstance(fields, dict):
                merged[section] = fields  # validation reports the unknown section or the wrong type
                continue
            _overlay(merged[section], fields, section, origin, sources)
    return merged, sources


def _overlay(target: dict[str, Any], layer: dict[str, Any], prefix: str, origin: str,
             sources: dict[str, str]) -> None:
    for name, value in layer.items():
        control_id = f"{prefix}.{name}"
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            _overlay(target[name], value, control_id, origin, sources)  # e.g. traffic.ip.allow
        else:
            target[name] = value
            sources[control_id] = origin


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
        return any(item not in allowed and not _inside(item, allowed) for item in _items(declared))
    if stricter == "superset":  # requirements: every baseline item must still be there
        kept = _items(declared)
        return any(item not in kept for item in _items(baseline))
    if stricter == "order" and order:
        return order.index(str(declared)) < order.index(str(baseline))
    return bool(_freeze(baseline) != _freeze(declared))  # unannotated: must stay equal


def _inside(item: Any, allowed: list[Any]) -> bool:
    """A network allowed because a baseline network contains it (10.1.0.0/16 inside 10.0.0.0/8)."""
    try:
        net = ipaddress.ip_network(str(item), strict=False)
    except ValueError:
        return False
    for other in allowed:
        try:
            outer = ipaddress.ip_network(str(other), strict=False)
        except ValueError:
            continue
        if net.version == outer.version and net.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False


def weakenings(baseline: Baseline, declared: Baseline, sources: dict[str, str]) -> list[Weakening]:
    """Every control `declared` sets weaker than `baseline`, with the layer that did it."""
    found: list[Weakening] = []
    for section in SECTIONS:
        _compare(getattr(baseline, section), getattr(declared, section), section, sources, found)
    return found


def _compare(base: BaseModel, decl: BaseModel, prefix: str, sources: dict[str, str],
             found: list[Weakening]) -> None:
    for name, info in type(base).model_fields.items():
        before, after = getattr(base, name), getattr(decl, name)
        control_id = f"{prefix}.{name}"
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if isinstance(before, BaseModel) and "stricter" not in extra:
            _compare(before, after, control_id, sources, found)  # a nested model: compare its own controls
            continue
        if is_weaker(extra.get("stricter"), before, after, extra.get("order")):  # type: ignore[arg-type]
            origin = sources.get(control_id) or _origin_below(control_id, sources)
            found.append(Weakening(control_id, origin, before, after))


def _origin_below(control_id: str, sources: dict[str, str]) -> str:
    prefix = control_id + "."
    return next((origin for key, origin in sources.items() if key.startswith(prefix)), "class")


def restore(declared: dict[str, Any], baseline: dict[str, Any], controls: set[str]) -> dict[str, Any]:
    """`declared` with the given controls put back to their baseline values (an exception not in force)."""
    out = copy.deepcopy(declared)
    for control_id in controls:
        path = control_id.split(".")
        target, source = out, baseline
        for part in path[:-1]:
            target, source = target[part], source[part]
        target[path[-1]] = copy.deepcopy(source[path[-1]])
    return out
