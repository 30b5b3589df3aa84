"""`bastion diff`: effective-policy changes per route between an approved config and another config or the
running gateway, weakenings first.

"Weaker" is decided per control by the `stricter=` annotation of its config field (the same rule `validate`
uses against class baselines); a control switched off by an exception (`waived`) is weaker than any value, and
a route the approved config does not have is an exposure.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from bastion.compile import CompiledGateway
from bastion.config.models import SECTIONS, Baseline
from bastion.governance.baseline import is_weaker
from bastion.posture import settings_diff
from bastion.posture.policy import route_policy


def effective_policies(compiled: CompiledGateway, now: float | None = None) -> dict[str, Any]:
    """The admin API's `GET /policies` body: the running config's hash and every route's effective policy at
    `now` (default: the instant it was compiled), from the plan schedule the data plane follows."""
    at = compiled.loaded_at if now is None else now
    return {"kind": "bastion.policies", "version": 1, "config_hash": compiled.config_hash,
            "loaded_at": compiled.loaded_at, "at": at,
            "routes": {r.info.route_id: route_policy(r, now=at) for r in compiled.routes},
            "settings": settings_diff.settings(compiled.config.model)}


def _annotations() -> dict[str, tuple[str | None, list[str] | None]]:
    out: dict[str, tuple[str | None, list[str] | None]] = {}
    for section in SECTIONS:
        model = Baseline.model_fields[section].annotation
        for name, info in model.model_fields.items():  # type: ignore[union-attr]
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            out[f"{section}.{name}"] = (extra.get("stricter"), extra.get("order"))
    return out


@dataclass(frozen=True, slots=True)
class Change:
    route: str
    control: str  # a control id, or "route" for an added/removed route
    kind: str  # weaker | stricter | changed | added | removed
    before: Any
    after: Any
    source_before: str | None = None
    source_after: str | None = None


def compare(approved: dict[str, Any], other: dict[str, Any]) -> list[Change]:
    """Changes from `approved` to `other` (both `effective_policies` documents), weakenings first."""
    notes = _annotations()
    changes: list[Change] = []
    a_routes, b_routes = approved["routes"], other["routes"]
    for route in sorted(set(a_routes) | set(b_routes)):
        if route not in b_routes:
            changes.append(Change(route, "route", "removed", a_routes[route]["path"], None))
            continue
        if route not in a_routes:  # served but never approved: an exposure
            changes.append(Change(route, "route", "added", None, b_routes[route]["path"]))
            continue
        a, b = a_routes[route], b_routes[route]
        for field in ("path", "methods", "class", "administrative", "upstream"):
            if a.get(field) != b.get(field):
                kind = "weaker" if field == "administrative" and a.get(field) and not b.get(field) else "changed"
                changes.append(Change(route, field, kind, a.get(field), b.get(field)))
        a_controls, b_controls = dict(a["controls"]), dict(b["controls"])
        for section in SECTIONS:  # a whole section switched off (or back on) is one change, not one per field
            a_waived, b_waived = _waived(a_controls, section), _waived(b_controls, section)
            if a_waived != b_waived and (a_waived or b_waived):
                kind = "weaker" if b_waived else "stricter"
                changes.append(Change(route, section, kind, a_waived or "enforced", b_waived or "enforced"))
                for control in [c for c in set(a_controls) | set(b_controls) if c.startswith(section + ".")]:
                    a_controls.pop(control, None)
                    b_controls.pop(control, None)
        for control in sorted(set(a_controls) | set(b_controls)):
            before, after = a_controls.get(control), b_controls.get(control)
            if before == after:
                continue
            vb = before["value"] if before else None
            va = after["value"] if after else None
            sb = before["source"] if before else None
            sa = after["source"] if after else None
            if vb == va:
                continue  # only where it came from changed (e.g. class -> route with the same value)
            changes.append(Change(route, control, _kind(notes.get(control), vb, va), vb, va, sb, sa))
    if "settings" in approved and "settings" in other:  # classes, providers, consumers, gateway, audit ...
        for section, path, kind, before, after in settings_diff.compare(approved["settings"], other["settings"]):
            changes.append(Change(f"<{section}>", path, kind, before, after))
    order = {"weaker": 0, "added": 1, "changed": 2, "removed": 3, "stricter": 4}
    return sorted(changes, key=lambda c: (order[c.kind], c.route.startswith("<"), c.route, c.control))


def _waived(controls: dict[str, Any], section: str) -> str | None:
    """`waived (exception:ID)` when every control of the section is waived, else None."""
    entries = [e for c, e in controls.items() if c.startswith(section + ".")]
    if entries and all(e["value"] == "waived" for e in entries):
        return f"waived ({entries[0]['source']})"
    return None


def _kind(note: tuple[str | None, list[str] | None] | None, before: Any, after: Any) -> str:
    if after == "waived":
        return "weaker"
    if before == "waived":
        return "stricter"
    stricter, order = note if note else (None, None)
    if stricter == "free":
        return "changed"
    if is_weaker(stricter, before, after, order):
        return "weaker"
    if is_weaker(stricter, after, before, order):
        return "stricter"
    return "changed"


def fetch(admin_url: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """`GET <admin>/policies` from a running gateway."""
    request = urllib.request.Request(admin_url.rstrip("/") + "/policies", headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            doc = json.loads(response.read(16 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        raise ValueError(f"{admin_url}/policies answered {exc.code}") from None
    except OSError as exc:
        raise ValueError(f"cannot reach the admin listener at {admin_url}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "bastion.policies":
        raise ValueError(f"{admin_url}/policies did not return effective policies")
    return doc


def to_json(changes: list[Change], approved: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "bastion.diff", "approved_hash": approved["config_hash"], "other_hash": other["config_hash"],
            "weakenings": sum(c.kind in ("weaker", "added") for c in changes),
            "changes": [asdict(c) for c in changes]}


def text(changes: list[Change], approved: dict[str, Any], other: dict[str, Any], other_name: str) -> str:
    head = f"approved config {approved['config_hash']} vs {other_name} {other['config_hash']}"
    if not changes:
        return f"{head}: no effective-policy change"
    lines = [f"{head}: {len(changes)} change(s)"]
    for c in changes:
        mark = "WEAKER " if c.kind in ("weaker", "added") else c.kind.upper().ljust(7)
        if c.control == "route":
            lines.append(f"  {mark} {c.route}: route {c.kind} ({c.before or c.after})")
            continue
        if c.route.startswith("<"):  # a setting: an object added or removed, or one value
            what = ("added" if c.before is None else "removed" if c.after is None else
                    f"{json.dumps(c.before)} -> {json.dumps(c.after)}") if "present" in (c.before, c.after) \
                else f"{json.dumps(c.before)} -> {json.dumps(c.after)}"
            lines.append(f"  {mark} {c.route}  {c.control}: {what}")
            continue
        src = f"  [{c.source_before} -> {c.source_after}]" if c.source_before != c.source_after else ""
        before, after = (c.before, c.after) if c.control in SECTIONS else (json.dumps(c.before), json.dumps(c.after))
        lines.append(f"  {mark} {c.route}  {c.control}: {before} -> {after}{src}")
    return "\n".join(lines)
