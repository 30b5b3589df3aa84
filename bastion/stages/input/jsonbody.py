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

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?', re.DOTALL)  # unrolled: no per-char alternation


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
    return parse_counted(body, limits)[0]


def parse_counted(body: bytes, limits: JsonLimits) -> tuple[Any, int]:
    """`parse`, and the number of object members in the document (inspection's prefilter uses it)."""
    try:
        doc = orjson.loads(body)  # rejects invalid UTF-8, lone surrogates, NaN and trailing data
    except orjson.JSONDecodeError as exc:
        why = "is not valid UTF-8" if "utf-8" in str(exc).lower() else "is not valid JSON"
        raise JsonError("input_invalid_body", f"The request body {why}.") from None
    members = check_shape(doc, limits)
    # Every key in the text is followed by exactly one structural colon, and a colon byte is otherwise only
    # ever inside a string (an escape is never a colon byte): so colons == members proves there is no duplicate
    # key, in one memchr-speed count. Otherwise (a duplicate, or a colon inside a string such as a URL or a
    # time) the keys are counted exactly by the regex.
    if members and body.count(b":") != members:
        keys = sum(1 for colon in _STRING.findall(body) if colon)
        if keys != members:
            raise JsonError("input_invalid_body", "The request body has a duplicate object key.")
    return doc, members


def check_shape(doc: Any, limits: JsonLimits) -> int:
    """Depth, string, array and object limits; returns the number of object members. Iterative (a deep
    document cannot exhaust the Python stack) and path-free: the JSON pointer of a violation is only worked
    out when there is one."""
    members = 0
    max_string, max_depth = limits.max_string, limits.max_depth
    max_keys, max_array = limits.max_keys, limits.max_array
    stack: list[tuple[Any, int]] = [(doc, 1)]
    pop, push = stack.pop, stack.append
    # The object and array branches repeat their item checks on purpose: this runs on every JSON body, and one
    # shared item loop measured 7% slower on bench/micro_input's body (a second pass over the keys).
    while stack:
        node, depth = pop()
        if node.__class__ is dict:
            if depth > max_depth or len(node) > max_keys:
                raise _locate(doc, limits)
            members += len(node)
            for key, value in node.items():
                if len(key) > max_string:
                    raise _locate(doc, limits)
                kind = value.__class__
                if kind is str:
                    if len(value) > max_string:
                        raise _locate(doc, limits)
                elif kind is dict or kind is list:
                    push((value, depth + 1))
        elif node.__class__ is list:
            if depth > max_depth or len(node) > max_array:
                raise _locate(doc, limits)
            for value in node:
                kind = value.__class__
                if kind is str:
                    if len(value) > max_string:
                        raise _locate(doc, limits)
                elif kind is dict or kind is list:
                    push((value, depth + 1))
        elif node.__class__ is str and len(node) > max_string:
            raise _limit((), f"is longer than {max_string} characters")
    return members


def _locate(doc: Any, limits: JsonLimits) -> JsonError:
    """The same walk with paths, run only once a limit is broken, to name where."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(doc, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list) and depth > limits.max_depth:
            return _limit(path, f"is nested deeper than {limits.max_depth} levels")
        if isinstance(node, dict):
            if len(node) > limits.max_keys:
                return _limit(path, f"has more than {limits.max_keys} members")
            items: list[tuple[str | int, Any]] = list(node.items())
            for key, _ in items:
                if len(str(key)) > limits.max_string:
                    return _limit(path, f"has a key longer than {limits.max_string} characters")
        elif isinstance(node, list):
            if len(node) > limits.max_array:
                return _limit(path, f"has more than {limits.max_array} items")
            items = list(enumerate(node))
        else:
            continue
        for key, value in items:
            if isinstance(value, str) and len(value) > limits.max_string:
                return _limit((*path, key), f"is longer than {limits.max_string} characters")
            stack.append((value, depth + 1, (*path, key)))
    return _limit((), "breaks a limit")


def _limit(path: tuple[str | int, ...], why: str) -> JsonError:
    where = pointer(path) or "/"
    return JsonError("input_json_limits", f"The request body at {where} {why}.")


def strings(doc: Any) -> dict[str, tuple[str | int, ...]]:
    """Every distinct string value and object key, with the path of its first occurrence (for inspection:
    a key repeated in every item of an array is inspected once)."""
    out: dict[str, tuple[str | int, ...]] = {}
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    # Two item loops on purpose (objects, arrays): one shared loop with an "is it an object" test per item
    # measured 7% slower on bench/micro_input's body, and a key must still be seen before its own value.
    while stack:
        node, path = stack.pop()
        if node.__class__ is dict:
            for key, value in node.items():
                if key not in out:
                    out[key] = path
                kind = value.__class__
                if kind is str:
                    if value not in out:
                        out[value] = (*path, key)
                elif kind is dict or kind is list:
                    stack.append((value, (*path, key)))
        elif node.__class__ is list:
            for i, value in enumerate(node):
                kind = value.__class__
                if kind is str:
                    if value not in out:
                        out[value] = (*path, i)
                elif kind is dict or kind is list:
                    stack.append((value, (*path, i)))
        elif node.__class__ is str:
            out.setdefault(node, ())
    return out


def remove(doc: Any, path: list[str | int], names: list[str]) -> None:
    """Delete the properties `names` of the object at `path` (strip mode)."""
    node = doc
    for part in path:
        node = node[part]
    if isinstance(node, dict):
        for name in names:
            node.pop(name, None)
