"""Strict JSON: one parse (orjson), no duplicate keys, no invalid UTF-8, bounded shape.

Parser differentials are a bypass: if `{"role": "user", "role": "admin"}` reaches an upstream whose parser keeps
the last key while the gateway checked the first, the check was worthless. orjson keeps the last key silently,
so the gateway counts the members it parsed against the keys in the text: one regex pass in C over the bytes,
exact because every string token is consumed in order (JSON has no quote outside a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from bastion.stages.input.schema import pointer

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?', re.DOTALL)


class JsonError(ValueError):
    """A body that is not acceptable JSON; `why` is safe to show, `reason` is the stable code."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int
    max_string: int
    max_array: int
    max_keys: int


def parse(body: bytes, limits: JsonLimits) -> Any:
    """Parse and check a JSON body; raise JsonError naming the JSON pointer and the limit."""
    try:
        doc = orjson.loads(body)  # rejects invalid UTF-8, lone surrogates, NaN and trailing data
    except orjson.JSONDecodeError as exc:
        why = "is not valid UTF-8" if "utf-8" in str(exc).lower() else "is not valid JSON"
        raise JsonError("input_invalid_body", f"The request body {why}.") from None
    members = check_shape(doc, limits)
    if members:
        keys = sum(1 for colon in _STRING.findall(body) if colon)
        if keys != members:
            raise JsonError("input_invalid_body", "The request body has a duplicate object key.")
    return doc


def check_shape(doc: Any, limits: JsonLimits) -> int:
    """Depth, string, array and object limits; returns the number of object members. Iterative: a deep
    document cannot exhaust the Python stack."""
    members = 0
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(doc, 1, ())]
    max_string = limits.max_string
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth > limits.max_depth:
                raise _limit(path, f"is nested deeper than {limits.max_depth} levels")
            if len(node) > limits.max_keys:
                raise _limit(path, f"has more than {limits.max_keys} members")
            members += len(node)
            for key, value in node.items():
                if len(key) > max_string:
                    raise _limit(path, f"has a key longer than {max_string} characters")
                if isinstance(value, str):
                    if len(value) > max_string:
                        raise _limit((*path, key), f"is longer than {max_string} characters")
                elif isinstance(value, dict | list):
                    stack.append((value, depth + 1, (*path, key)))
        elif isinstance(node, list):
            if depth > limits.max_depth:
                raise _limit(path, f"is nested deeper than {limits.max_depth} levels")
            if len(node) > limits.max_array:
                raise _limit(path, f"has more than {limits.max_array} items")
            for i, value in enumerate(node):
                if isinstance(value, str):
                    if len(value) > max_string:
                        raise _limit((*path, i), f"is longer than {max_string} characters")
                elif isinstance(value, dict | list):
                    stack.append((value, depth + 1, (*path, i)))
        elif isinstance(node, str) and len(node) > max_string:
            raise _limit(path, f"is longer than {max_string} characters")
    return members


def _limit(path: tuple[str | int, ...], why: str) -> JsonError:
    where = pointer(path) or "/"
    return JsonError("input_json_limits", f"The request body at {where} {why}.")


def strings(doc: Any) -> list[tuple[str, str]]:
    """Every string value (and object key) with its JSON pointer, for inspection."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                out.append((pointer(path), key))
                if isinstance(value, str):
                    out.append((pointer((*path, key)), value))
                elif isinstance(value, dict | list):
                    stack.append((value, (*path, key)))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    out.append((pointer((*path, i)), value))
                elif isinstance(value, dict | list):
                    stack.append((value, (*path, i)))
        elif isinstance(node, str):
            out.append(("", node))
    return out


def remove(doc: Any, path: list[str | int], names: list[str]) -> None:
    """Delete the properties `names` of the object at `path` (strip mode)."""
    node = doc
    for part in path:
        node = node[part]
    if isinstance(node, dict):
        for name in names:
            node.pop(name, None)
