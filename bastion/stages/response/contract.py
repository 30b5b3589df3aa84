"""Response contract: an operation's response schemas, compiled once, and the filter of one JSON body.

The request side's normalisation (`bastion.stages.input.schema`) is reused as is: OpenAPI 3.0 rewritten into
draft 2020-12, recursive `$ref`s as `$defs`, and `unevaluatedProperties: false` on every object schema, which sees
through `$ref` and `allOf`. Only the direction differs: in a response `readOnly` properties are expected and
`writeOnly` ones (passwords, secrets) must never appear. The request normaliser drops properties marked
`readOnly`, so the schema handed to it has the two flags swapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from bastion.openapi.keys import REFS_KEY
from bastion.stages.input import jsonbody
from bastion.stages.input.media import is_json, match_media, media_type
from bastion.stages.input.schema import compile_schema, normaliser, pointer, undeclared_names

_DATA = frozenset({"enum", "const", "default", "example", "examples"})  # values, not schemas: left alone


def for_responses(node: Any) -> Any:
    """A copy of a schema with `readOnly` and `writeOnly` swapped (see the module docstring)."""
    if isinstance(node, list):
        return [for_responses(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in _DATA else for_responses(v)) for k, v in node.items() if k not in ("readOnly", "writeOnly")}
    if node.get("writeOnly") is True:
        out["readOnly"] = True
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What filtering one body found. `body` is None when the body is forwarded as received."""

    reason: str  # "" (conformed), response_stripped, response_undeclared, response_schema_mismatch,
    #              response_unfilterable
    body: bytes | None = None
    where: str = ""  # JSON pointer of the first finding, for the operator


# keywords whose failure drops the annotations (evaluated properties) of a whole subschema
_BRANCHES = frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas"})
_NO_LIMITS = jsonbody.JsonLimits(max_depth=256, max_string=1 << 40, max_array=1 << 40, max_keys=1 << 40)


class ResponseContract:
    """The JSON response schemas of one operation, keyed by the `responses` key (`200`, `2XX`, `default`)."""

    def __init__(self, operation: dict[str, Any]) -> None:
        op = {**operation}
        if op.get(REFS_KEY):
            op[REFS_KEY] = for_responses(op[REFS_KEY])
        norm = normaliser(op, closed=True)
        self.responses: dict[str, dict[str, jsonschema_rs.Validator]] = {}
        for code, response in (operation.get("responses") or {}).items():
            content = response.get("content") if isinstance(response, dict) else None
            compiled: dict[str, jsonschema_rs.Validator] = {}
            for key, media in (content or {}).items():
                schema = media.get("schema") if isinstance(media, dict) else None
                kind = media_type(key)[0]
                if schema is not None and (is_json(kind) or kind in ("*/*", "application/*")):
                    compiled[key] = compile_schema(norm.root(for_responses(schema)))
            self.responses[str(code).upper()] = compiled

    def __bool__(self) -> bool:
        return any(self.responses.values())

    def validator(self, status: int, content_type: str | None) -> jsonschema_rs.Validator | None:
        """The schema a response with this status and Content-Type must match, or None (forwarded as is)."""
        kind = media_type(content_type)[0]
        if not is_json(kind):
            return None
        declared = self.responses.get(str(status))
        if declared is None:
            declared = self.responses.get(f"{status // 100}XX")
        if declared is None:
            declared = self.responses.get("DEFAULT")
        if not declared:
            return None
        key = match_media(kind, declared)
        return declared[key] if key is not None else None

    @staticmethod
    def filter(body: bytes, validator: jsonschema_rs.Validator, strip: bool) -> Outcome:
        """Check one body. With `strip`, undeclared properties are removed and other mismatches only counted;
        without, any mismatch is reported (the caller refuses the response)."""
        try:
            doc = jsonbody.parse(body, _NO_LIMITS)  # no duplicate keys: the client would read another value
        except jsonbody.JsonError:
            return Outcome("response_unfilterable", where="/")
        if validator.is_valid(doc):
            return Outcome("")
        changed = False
        for _ in range(64):  # each round removes the deepest undeclared properties
            errors = [(tuple(e.instance_path), undeclared_names(e), e) for e in validator.iter_errors(doc)]
            undeclared = [(path, names) for path, names, _ in errors if names]
            others = [(path, e) for path, names, e in errors if not names]
            branchy = [path for path, e in others if any(part in _BRANCHES for part in e.schema_path)]
            if not strip:
                if others:
                    return Outcome("response_schema_mismatch", where=pointer(list(others[0][0])) or "/")
                path, names = max(undeclared, key=lambda item: len(item[0]))
                return Outcome("response_undeclared", where=pointer([*path, names[0]]))
            # An error can fail an `allOf`/`oneOf` branch, and then *every* property that branch declares looks
            # unevaluated: trust an undeclared-property error only when no error under a composition lies at
            # or below its object and no undeclared one lies deeper; strip those, and look again.
            sure = [(path, names) for path, names in undeclared
                    if not any(_below(q, path) for q, _ in undeclared)
                    and not any(q[:len(path)] == path for q in branchy)]
            if not sure:
                if undeclared:
                    return Outcome("response_unfilterable", where=pointer(list(undeclared[0][0])) or "/")
                out = orjson.dumps(doc) if changed else None
                return Outcome("response_schema_mismatch", out, pointer(list(others[0][0])) or "/")
            for path, names in sure:
                jsonbody.remove(doc, list(path), names)
            changed = True
            if validator.is_valid(doc):
                break
        else:
            return Outcome("response_unfilterable", where="/")
        return Outcome("response_stripped", orjson.dumps(doc))


def _below(path: tuple[Any, ...], parent: tuple[Any, ...]) -> bool:
    return len(path) > len(parent) and path[:len(parent)] == parent
