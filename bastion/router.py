"""Route matching: a segment trie built once per config load; per request only dict lookups.

Paths are matched on their percent-decoded segments. Paths that could be read differently by the gateway and
the upstream (dot segments, encoded slashes or backslashes, NUL) are refused before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class AmbiguousPath(ValueError):
    """A request path that must not be routed (it could mean another path upstream)."""


@dataclass(slots=True)
class _Node:
    static: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    param_name: str = ""
    methods: dict[str, Any] = field(default_factory=dict)  # method -> compiled route


def split_template(template: str) -> list[str]:
    return [part for part in template.split("/") if part]


def split_request_path(path: str) -> list[str]:
    """Split and decode a request path; raise AmbiguousPath for traversal and encoding tricks."""
    parts = path.split("/")
    out = []
    for raw in parts[1:]:
        if raw == "":
            continue  # "//" collapses, as most upstream frameworks do
        if "%" in raw:
            lowered = raw.lower()
            if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "%25" in lowered:
                raise AmbiguousPath("encoded '/', '\\', '%' or NUL in path")
            if _BAD_ESCAPE.search(raw):
                raise AmbiguousPath("invalid percent-encoding in path")
            try:
                seg = unquote(raw, errors="strict")
            except UnicodeDecodeError:  # found by fuzz/http.py: the refusal is this function's own
                raise AmbiguousPath("percent-encoding that is not UTF-8 in path") from None
        else:
            seg = raw
        if seg in (".", "..") or "\\" in seg or "\x00" in seg:
            raise AmbiguousPath("dot segment or backslash in path")
        out.append(seg)
    return out


class Router:
    """Routes by host (exact, lower-case) then path template then method."""

    def __init__(self) -> None:
        self._hosts: dict[str, _Node] = {}
        self._any = _Node()

    def add(self, hosts: list[str], template: str, method: str, route: Any) -> Any | None:
        """Add a route; returns the route already there for the same host, path shape and method."""
        roots = [self._hosts.setdefault(h.lower(), _Node()) for h in hosts] or [self._any]
        clash = None
        for root in roots:
            node = root
            for part in split_template(template):
                if part.startswith("{") and part.endswith("}"):
                    if node.param is None:
                        node.param = _Node(param_name=part[1:-1])
                    node = node.param
                else:
                    node = node.static.setdefault(part, _Node())
            clash = clash or node.methods.get(method)
            node.methods.setdefault(method, route)
        return clash

    def match(self, host: str | None, segments: list[str]) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The method table of the matching path (None: unknown path) and the path parameters."""
        if host is not None and self._hosts:
            root = self._hosts.get(host)
            if root is not None:
                found = _walk(root, segments, 0, {})
                if found[0] is not None:
                    return found
        return _walk(self._any, segments, 0, {})


def _walk(node: _Node, segs: list[str], i: int, params: dict[str, str]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    if i == len(segs):
        return (node.methods or None), params
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:  # a static segment wins over a parameter
        found = _walk(child, segs, i + 1, params)
        if found[0] is not None:
            return found
    if node.param is not None:
        params = {**params, node.param.param_name: seg}
        return _walk(node.param, segs, i + 1, params)
    return None, params
