"""OpenAPI schemas -> compiled JSON Schema validators, and validator errors -> safe public sentences.

OpenAPI 3.0 schemas are a dialect of draft 4: `nullable`, boolean `exclusiveMinimum` and the `int32`/`int64`
formats are rewritten into draft 2020-12, the dialect of OpenAPI 3.1, and everything is compiled once with
jsonschema-rs. Undeclared properties are found with `unevaluatedProperties: false`, which (unlike
`additionalProperties`) sees through `allOf`/`anyOf`/`oneOf` and `$ref`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import jsonschema_rs

from bastion.openapi.keys import REFS_KEY, VERSION_KEY

_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
               "unevaluatedItems", "unevaluatedProperties", "additionalItems")
_COMPOSITION = ("allOf", "anyOf", "oneOf")
_DROP = frozenset({"nullable", "discriminator", "xml", "externalDocs", "example", "deprecated"})


def _valid_byte(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


FORMATS: dict[str, Callable[[str], bool]] = {"byte": _valid_byte}


class Normaliser:
    """Rewrites one operation's schemas into draft 2020-12 for requests.

    `closed`: mark object schemas with `unevaluatedProperties: false` so undeclared properties are errors;
    `readOnly` properties are dropped from request schemas (a client may not set them).
    """

    def __init__(self, oas: str, closed: bool, refs: dict[str, Any] | None = None) -> None:
        self.legacy = oas == "3.0"
        self.closed = closed
        self.defs: dict[str, str] = {key: f"#/$defs/d{i}" for i, key in enumerate(refs or {})}
        self.refs = refs or {}

    def root(self, schema: Any) -> Any:
        """A self-contained schema: recursive references become `$defs`."""
        out = self.schema(schema, in_composition=False)
        if self.defs and isinstance(out, dict):
            out = {**out, "$defs": {self.defs[k][8:]: self.schema(v, in_composition=False)
                                    for k, v in self.refs.items()}}
        return out

    def schema(self, node: Any, in_composition: bool) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or key.startswith("x-"):
                continue
            if key == "$ref" and isinstance(value, str):
                out[key] = self.defs.get(value, value)
            elif key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.schema(sub, False) for name, sub in value.items()
                            if not (key == "properties" and isinstance(sub, dict) and sub.get("readOnly"))}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                out[key] = [self.schema(sub, key in _COMPOSITION) for sub in value]
            elif key in _SCHEMA_ONE:
                out[key] = self.schema(value, False)
            else:
                out[key] = value
        if "required" in out and isinstance(node.get("properties"), dict):
            read_only = {n for n, s in node["properties"].items() if isinstance(s, dict) and s.get("readOnly")}
            out["required"] = [n for n in out["required"] if n not in read_only]
        if self.legacy:
            self._from_30(node, out)
        bounds = _INT_RANGE.get(str(out.get("format")))
        if bounds and _has_type(out, "integer"):
            out.setdefault("minimum", bounds[0])
            out.setdefault("maximum", bounds[1])
        if self.closed and not in_composition and _declares_properties(out) \
                and "additionalProperties" not in out and "unevaluatedProperties" not in out:
            out["unevaluatedProperties"] = False
        return out

    def _from_30(self, node: dict[str, Any], out: dict[str, Any]) -> None:
        for word in ("Minimum", "Maximum"):
            flag, bound = f"exclusive{word}", word.lower()
            if isinstance(node.get(flag), bool):
                if node[flag] and bound in node:
                    out[flag] = out.pop(bound)
                else:
                    out.pop(flag)
        if node.get("nullable") is True:
            kind = out.get("type")
            if isinstance(kind, str):
                out["type"] = [kind, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]


def _has_type(schema: dict[str, Any], name: str) -> bool:
    kind = schema.get("type")
    return kind == name or (isinstance(kind, list) and name in kind)


def _declares_properties(schema: dict[str, Any]) -> bool:
    if "properties" in schema or "patternProperties" in schema:
        return True
    return any(isinstance(sub, dict) and _declares_properties(sub)
               for key in _COMPOSITION for sub in schema.get(key, ()) or ())


def compile_schema(schema: Any) -> jsonschema_rs.Validator:
    """One validator, built once at config load."""
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True, formats=FORMATS)


def normaliser(operation: dict[str, Any], closed: bool) -> Normaliser:
    return Normaliser(str(operation.get(VERSION_KEY, "3.1")), closed, operation.get(REFS_KEY))


def pointer(path: list[str | int] | tuple[str | int, ...]) -> str:
    """RFC 6901 JSON pointer of an instance path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def undeclared_names(error: jsonschema_rs.ValidationError) -> list[str]:
    """The property names an `unevaluatedProperties`/`additionalProperties` error is about, else []."""
    name = error.kind.name
    if name in ("unevaluatedProperties", "additionalProperties"):
        data = error.kind.as_dict()
        return [str(n) for n in data.get("unexpected", ())]
    return []


def explain(error: jsonschema_rs.ValidationError) -> str:
    """Why a value failed, in terms of the published contract only: no schema paths, patterns or internals."""
    kind = error.kind.name
    data = error.kind.as_dict()
    limit = data.get("limit")
    if kind == "type":
        types = [t for t in data.get("types", ()) if t != "null"] or ["null"]
        return "must be " + " or ".join(_ARTICLE.get(t, t) for t in types)
    if kind == "required":
        return f"is missing required property '{data.get('property')}'"
    messages = {
        "enum": "is not one of the allowed values",
        "const": "is not the allowed value",
        "pattern": "does not have the expected format",
        "format": f"is not a valid {data.get('format')}",
        "minimum": f"must be at least {limit}",
        "maximum": f"must be at most {limit}",
        "exclusiveMinimum": f"must be greater than {limit}",
        "exclusiveMaximum": f"must be less than {limit}",
        "multipleOf": "is not an allowed multiple",
        "minLength": f"must be at least {limit} characters long",
        "maxLength": f"must be at most {limit} characters long",
        "minItems": f"must have at least {limit} items",
        "maxItems": f"must have at most {limit} items",
        "uniqueItems": "must not contain duplicate items",
        "minProperties": f"must have at least {limit} properties",
        "maxProperties": f"must have at most {limit} properties",
        "oneOf": "does not match exactly one of the allowed shapes",
        "anyOf": "does not match any of the allowed shapes",
        "unevaluatedProperties": "has undeclared properties",
        "additionalProperties": "has undeclared properties",
    }
    return messages.get(kind, "is not allowed")


_ARTICLE = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "a boolean",
            "object": "an object", "array": "an array", "null": "null"}
