"""Checks an event against the pinned OCSF version's required attributes (`schema/ocsf-<version>.json`).

Not a full OCSF validator: it checks what a SIEM's parser relies on (required attributes, `at_least_one`
constraints, class/category/type ids and the enums Bastion sets), which is what changes between versions.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from bastion.audit.events import OCSF_VERSION

_SCHEMA_DIR = Path(__file__).parent / "schema"


@cache
def pinned(version: str = OCSF_VERSION) -> dict[str, Any]:
    return json.loads((_SCHEMA_DIR / f"ocsf-{version}.json").read_text())  # type: ignore[no-any-return]


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != {}


def _check_object(kind: str, value: Any, where: str, schema: dict[str, Any], errors: list[str]) -> None:
    rules = schema["objects"].get(kind, {})
    if not isinstance(value, dict):
        errors.append(f"{where}: expected an object ({kind})")
        return
    for name in rules.get("required", []):
        if not _present(value.get(name)):
            errors.append(f"{where}.{name}: required by {kind}")
    at_least_one = rules.get("at_least_one")
    if at_least_one and not any(_present(value.get(name)) for name in at_least_one):
        errors.append(f"{where}: {kind} needs at least one of {', '.join(at_least_one)}")
    if kind == "metadata" and isinstance(value.get("product"), dict):
        _check_object("product", value["product"], f"{where}.product", schema, errors)
    if kind == "actor" and isinstance(value.get("user"), dict):
        _check_object("user", value["user"], f"{where}.user", schema, errors)


def validate(event: dict[str, Any], version: str = OCSF_VERSION) -> list[str]:
    """The problems of `event` against the pinned schema; empty when it conforms."""
    schema = pinned(version)
    errors: list[str] = []
    base = schema["base_event"]
    for name in base["required"]:
        if not _present(event.get(name)):
            errors.append(f"{name}: required by base_event")
    klass = schema["classes"].get(str(event.get("class_uid")))
    if klass is None:
        return [*errors, f"class_uid {event.get('class_uid')!r} is not a class Bastion pins"]
    if event.get("category_uid") != klass["category_uid"]:
        errors.append(f"category_uid: {event.get('category_uid')} is not {klass['category_uid']}")
    activity = event.get("activity_id")
    if isinstance(activity, int) and event.get("type_uid") != event.get("class_uid", 0) * 100 + activity:
        errors.append(f"type_uid: {event.get('type_uid')} is not class_uid * 100 + activity_id")
    for name in klass.get("required", []):
        if not _present(event.get(name)):
            errors.append(f"{name}: required by {klass['name']}")
    at_least_one = klass.get("at_least_one")
    if at_least_one and not any(_present(event.get(name)) for name in at_least_one):
        errors.append(f"{klass['name']} needs at least one of {', '.join(at_least_one)}")
    for name, allowed in {**base.get("enums", {}), **klass.get("enums", {})}.items():
        if name in event and event[name] not in allowed:
            errors.append(f"{name}: {event[name]!r} is not one of {allowed}")
    _check_object("metadata", event.get("metadata"), "metadata", schema, errors)
    if event.get("metadata", {}).get("version") != version:
        errors.append(f"metadata.version: {event.get('metadata', {}).get('version')!r} is not {version}")
    for name, kind in klass.get("objects", {}).items():
        if name in event:
            _check_object(kind, event[name], name, schema, errors)
    unmapped = event.get("unmapped")
    if not isinstance(unmapped, dict) or not isinstance(unmapped.get("bastion"), dict):
        errors.append("unmapped.bastion: Bastion's own fields are missing")
    return errors
