"""API-aware scoping: which CRS rule families a field needs, from its OpenAPI schema.

A value the contract already constrains positively (integer, number, boolean, enum/const, a string with a
`format` such as email/uuid/date-time, or an anchored `pattern` over a closed alphabet) was validated before
inspection runs: negative rules add nothing but false positives, so it is not presented to the CRS at all.
A string the contract marks with `x-bastion-content: html | markdown` keeps only the XSS family (script and
event handlers matter where HTML is rendered; SQL keywords in prose do not), less the rule that refuses any
HTML tag at all (941160: rich text is tags); `code` keeps no attack family (a code sample is full of shell,
SQL and log lines by design: it must be stored and shown escaped). Every other string is free text and gets
every rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.openapi.keys import REFS_KEY

Kind = Literal["typed", "html", "markdown", "code", "text"]
CONTENT_KINDS = ("html", "markdown", "code")
TYPED_FORMATS = frozenset({
    "email", "idn-email", "uuid", "date-time", "date", "time", "duration", "hostname", "idn-hostname", "ipv4",
    "ipv6", "byte", "int32", "int64", "float", "double", "json-pointer",
})
"""String formats that constrain a value enough to skip negative rules. Not `uri`: a URI's query is free text
(`https://a.example/?q=1'union/**/select` is a valid URI)."""
_OPEN_ESCAPES = re.compile(r"\\[SWD]")
_ESCAPED = re.compile(r"\\.")
_CLASSES = re.compile(r"\[[^\]]*\]")
KEEP_TAGS: dict[str, frozenset[str]] = {
    "html": frozenset({"attack-xss"}),
    "markdown": frozenset({"attack-xss"}),
    "code": frozenset(),
}
"""The CRS families (rule tags) a field of each content kind keeps; every other `attack-*` family is off."""
DROP_RULES: dict[str, frozenset[str]] = {
    "html": frozenset({"941160"}),
    "markdown": frozenset({"941160"}),
}
"""Single rules off for a content kind within a family it keeps (941160: "HTML injection", any tag)."""
ATTACK_TAGS = ("attack-sqli", "attack-xss", "attack-rce", "attack-lfi", "attack-rfi", "attack-php",
               "attack-nodejs", "attack-java", "attack-injection-php", "attack-injection-generic",
               "attack-fixation", "attack-multipart-header", "attack-protocol", "attack-reputation-scanner",
               "attack-disclosure", "attack-generic")
_MAX_DEPTH = 32


@dataclass
class Scope:
    """The contract of one JSON value: its kind when it is a leaf, its members when a container."""

    kind: Kind = "text"
    properties: dict[str, Scope] = field(default_factory=dict)
    items: Scope | None = None
    additional: Scope | None = None


def build_scope(schema: Any, refs: dict[str, Any] | None = None, depth: int = 0) -> Scope:
    """The Scope of an OpenAPI schema (3.0 or 3.1); anything unclear (oneOf, anyOf) is free text."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return Scope()
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return build_scope((refs or {}).get(ref), refs, depth + 1)
    content = schema.get("x-bastion-content")
    if content in CONTENT_KINDS:
        return Scope(kind=content)
    scope = Scope(kind=_leaf_kind(schema))
    for sub in schema.get("allOf") or ():  # every branch applies: merge what they declare
        part = build_scope(sub, refs, depth + 1)
        scope.properties.update(part.properties)
        scope.items = scope.items or part.items
        if part.kind != "text":
            scope.kind = part.kind
    for name, sub in (schema.get("properties") or {}).items():
        scope.properties[str(name)] = build_scope(sub, refs, depth + 1)
    if isinstance(schema.get("items"), dict):
        scope.items = build_scope(schema["items"], refs, depth + 1)
    if isinstance(schema.get("additionalProperties"), dict):
        scope.additional = build_scope(schema["additionalProperties"], refs, depth + 1)
    return scope


def _leaf_kind(schema: dict[str, Any]) -> Kind:
    if "enum" in schema or "const" in schema:
        return "typed"
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if kinds and all(k in ("integer", "number", "boolean", "null") for k in kinds):
        return "typed"
    if "string" in kinds and (schema.get("format") in TYPED_FORMATS or _constraining(schema.get("pattern"))):
        return "typed"
    return "text"


def _constraining(pattern: Any) -> bool:
    """A `pattern` that pins the whole value to a closed alphabet: anchored at both ends, no `.` outside a
    character class, no negated class, no \\S/\\W/\\D (`^.*$` and `^[^<>]+$` constrain nothing)."""
    if not isinstance(pattern, str) or not pattern.startswith("^") or not pattern.endswith("$"):
        return False
    if "[^" in pattern or _OPEN_ESCAPES.search(pattern):
        return False
    body = _CLASSES.sub("", _ESCAPED.sub("", pattern))  # `.` is literal inside [...] and when escaped
    return "." not in body


def operation_scope(operation: dict[str, Any], media: str) -> Scope | None:
    """The Scope of an operation's request body for one media type key, or None without a schema."""
    body = operation.get("requestBody")
    content = (body or {}).get("content") if isinstance(body, dict) else None
    schema = ((content or {}).get(media) or {}).get("schema") if isinstance(content, dict) else None
    return build_scope(schema, operation.get(REFS_KEY)) if schema is not None else None


def classify(doc: Any, scope: Scope, prefix: str = "json") -> dict[str, Kind]:
    """ModSecurity argument name -> kind, for every value of `doc` whose kind is not free text."""
    out: dict[str, Kind] = {}
    stack: list[tuple[str, Any, Scope]] = [(prefix, doc, scope)]
    while stack:
        name, value, sc = stack.pop()
        if isinstance(value, dict):
            for key, sub in value.items():
                child = sc.properties.get(key) or sc.additional
                if child is not None:
                    stack.append((f"{name}.{key}", sub, child))
        elif isinstance(value, list):
            if sc.items is not None:
                stack.extend((f"{name}.array_{i}", sub, sc.items) for i, sub in enumerate(value))
        elif sc.kind != "text":
            out[name] = sc.kind
    return out


def parameter_kinds(parameters: list[dict[str, Any]], refs: dict[str, Any] | None) -> dict[str, Kind]:
    """Query parameter name -> kind (not free text), from the operation's `parameters`."""
    out: dict[str, Kind] = {}
    for raw in parameters:
        if isinstance(raw, dict) and raw.get("in") == "query" and isinstance(raw.get("schema"), dict):
            kind = build_scope(raw["schema"], refs).kind
            if kind != "text":
                out[str(raw.get("name", ""))] = kind
    return out


def form_kinds(names: Iterable[str], scope: Scope) -> dict[str, Kind]:
    """Form field name -> kind (not free text), for urlencoded and multipart fields the contract validated:
    ModSecurity names them `ARGS:name`; an array field's kind is its items' (each value was validated)."""
    out: dict[str, Kind] = {}
    for name in names:
        field_scope = scope.properties.get(name) or scope.additional
        if field_scope is not None and field_scope.items is not None:
            field_scope = field_scope.items
        if field_scope is not None and field_scope.kind != "text":
            out[name] = field_scope.kind
    return out


def with_query(body: dict[str, Kind], query: dict[str, Kind], body_names: Iterable[str]) -> dict[str, Kind]:
    """The body's kinds and the query's, for a request with both. A query name a body field also uses stays
    free text: ARGS holds both values under one name, and scoping removes by name."""
    taken = set(body_names)
    return {**{name: kind for name, kind in query.items() if name not in taken}, **body}
