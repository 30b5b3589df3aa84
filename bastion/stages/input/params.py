"""Parameters: how OpenAPI serialises them (style/explode) and how their strings become typed values.

`ParameterSet` is built once per operation. Per request it turns the raw query string, path values, headers and
cookies into one document `{"path": {...}, "query": {...}, "header": {...}, "cookie": {...}}` that a single
compiled validator checks, so a request costs one validator call however many parameters it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

from bastion.stages.input.schema import Normaliser

LOCATIONS = ("path", "query", "header", "cookie")
# OAS 3: these header parameters are ignored; the protocol and other controls own them
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_NUM = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
_DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}


class ParameterError(ValueError):
    """A parameter that cannot even be decoded (bad percent-encoding, invalid UTF-8, repeated scalar)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where} {why}")
        self.where = where
        self.why = why


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # header names lower-cased
    location: str
    style: str
    explode: bool
    kind: str  # "array", "object" or "scalar"
    schema: dict[str, Any]
    content_json: bool  # `content: {application/json: ...}`: the value is a JSON document

    def label(self) -> str:
        return f"{self.location} parameter '{self.name}'"


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds:
        return "array"
    if "object" in kinds or "properties" in schema:
        return "object"
    return "scalar"


class ParameterSet:
    """The declared parameters of one operation and the schema of all of them together."""

    def __init__(self, parameters: list[dict[str, Any]], normaliser: Normaliser) -> None:
        self.params: list[Param] = []
        properties: dict[str, dict[str, Any]] = {loc: {} for loc in LOCATIONS}
        required: dict[str, list[str]] = {loc: [] for loc in LOCATIONS}
        for raw in parameters:
            location = raw.get("in")
            name = str(raw.get("name", ""))
            if location not in LOCATIONS or (location == "header" and name.lower() in _IGNORED_HEADERS):
                continue
            if location == "header":
                name = name.lower()
            content = raw.get("content") or {}
            schema = raw.get("schema")
            if schema is None and content:
                schema = next(iter(content.values())).get("schema", {})
            schema = normaliser.root(schema or {})
            style = raw.get("style", _DEFAULT_STYLE[location])
            explode = bool(raw.get("explode", style == "form"))
            self.params.append(Param(name, location, style, explode, _kind(schema), schema,
                                     any("json" in media for media in content)))
            properties[location][name] = schema
            if raw.get("required") or location == "path":
                required[location].append(name)
        self.schema = {
            "type": "object",
            "properties": {
                loc: {"type": "object", "properties": properties[loc], "required": required[loc]}
                for loc in LOCATIONS
            },
        }
        self.declared_query = frozenset(self._query_names())
        self.header_params = [p for p in self.params if p.location == "header"]
        self.cookie_params = [p for p in self.params if p.location == "cookie"]
        self.query_params = [p for p in self.params if p.location == "query"]
        self.path_params = [p for p in self.params if p.location == "path"]

    def _query_names(self) -> list[str]:
        names = []
        for p in self.params:
            if p.location != "query":
                continue
            names.append(p.name)
            if p.kind == "object" and p.style == "form" and p.explode:
                names.extend(p.schema.get("properties", {}))  # ?color=red&size=L for an exploded object
        return names

    def is_declared_query(self, name: str) -> bool:
        if name in self.declared_query:
            return True
        base, bracket, _ = name.partition("[")
        return bool(bracket) and any(p.name == base and p.style == "deepObject" for p in self.query_params)

    def collect(self, path_values: dict[str, str], query: list[tuple[str, str]],
                headers: list[tuple[str, str]], cookies: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The typed values of the declared parameters that are present."""
        out: dict[str, dict[str, Any]] = {loc: {} for loc in LOCATIONS}
        for p in self.path_params:
            if p.name in path_values:
                out["path"][p.name] = _typed(p, _split_path(p, path_values[p.name]))
        for p in self.query_params:
            value = _query_value(p, query)
            if value is not None:
                out["query"][p.name] = _typed(p, value)
        for p in self.header_params:
            values = [v for k, v in headers if k == p.name]
            if values:
                if p.kind != "array" and len(values) > 1:
                    raise ParameterError(p.label(), "must be sent once")
                out["header"][p.name] = _typed(p, _split_simple(p, ",".join(values)))
        for p in self.cookie_params:
            if p.name in cookies:
                out["cookie"][p.name] = _typed(p, _split_simple(p, cookies[p.name]))
        return out


def parse_query(raw: str) -> list[tuple[str, str]]:
    """`a=1&b=x+y` -> [("a", "1"), ("b", "x y")]; invalid UTF-8 in an escape is an error, not U+FFFD."""
    pairs: list[tuple[str, str]] = []
    if not raw:
        return pairs
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append((unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")))
        except UnicodeDecodeError:
            raise ParameterError("query string", "is not valid UTF-8 after percent-decoding") from None
    return pairs


def parse_cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """RFC 6265 §5.4 `Cookie: a=1; b=2`; the first occurrence of a name wins (as most frameworks do)."""
    cookies: dict[str, str] = {}
    for key, value in headers:
        if key != "cookie":
            continue
        for item in value.split(";"):
            name, eq, val = item.strip().partition("=")
            if eq and name and name not in cookies:
                cookies[name] = unquote(val.strip().strip('"'))
    return cookies


def _query_value(p: Param, query: list[tuple[str, str]]) -> Any:
    if p.style == "deepObject":
        prefix = p.name + "["
        obj = {k[len(prefix):-1]: v for k, v in query if k.startswith(prefix) and k.endswith("]")}
        return obj or None
    if p.kind == "object" and p.style == "form" and p.explode:
        names = p.schema.get("properties", {})
        obj = {k: v for k, v in query if k in names}
        return obj or None
    values = [v for k, v in query if k == p.name]
    if not values:
        return None
    if p.kind == "array":
        if p.explode and p.style == "form":
            return values
        sep = {"form": ",", "spaceDelimited": " ", "pipeDelimited": "|"}.get(p.style, ",")
        return [item for v in values for item in v.split(sep)]
    if len(values) > 1:  # HTTP parameter pollution: which copy would the upstream read?
        raise ParameterError(p.label(), "must be sent once")
    if p.kind == "object":
        return _pairs(values[0].split(","))
    return values[0]


def _split_path(p: Param, value: str) -> Any:
    if p.style == "label":
        value = value[1:] if value.startswith(".") else value
        sep = "." if p.explode else ","
        return _shape(p, value, sep)
    if p.style == "matrix":
        prefix = f";{p.name}="
        if p.kind == "array" and p.explode:
            return [part[len(p.name) + 1:] for part in value.split(";") if part.startswith(p.name + "=")]
        value = value[len(prefix):] if value.startswith(prefix) else value.lstrip(";")
        return _shape(p, value, ",")
    return _split_simple(p, value)


def _split_simple(p: Param, value: str) -> Any:
    return _shape(p, value, ",")


def _shape(p: Param, value: str, sep: str) -> Any:
    if p.kind == "array":
        return value.split(sep) if value else []
    if p.kind == "object":
        parts = value.split(sep)
        if p.explode:
            return dict(part.partition("=")[::2] for part in parts)
        return _pairs(parts)
    return value


def _pairs(parts: list[str]) -> dict[str, str]:
    return {parts[i]: parts[i + 1] for i in range(0, len(parts) - 1, 2)}


def _typed(p: Param, value: Any) -> Any:
    if p.content_json and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ParameterError(p.label(), "is not valid JSON") from None
    return coerce(value, p.schema)


def coerce(value: Any, schema: Any) -> Any:
    """Strings from a URL, header or form -> the JSON type the schema asks for; left as-is when they don't fit
    (the validator then says why)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce(v, items) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    for candidate in kinds:
        if candidate == "integer" and _INT.match(value):
            return int(value)
        if candidate == "number" and _NUM.match(value):
            return float(value) if ("." in value or "e" in value.lower()) else int(value)
        if candidate == "boolean" and value in ("true", "false"):
            return value == "true"
        if candidate == "null" and value in ("", "null"):
            return None
        if candidate == "string":
            return value
    return value
