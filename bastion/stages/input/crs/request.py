"""A request as ModSecurity v3 presents it to rules: collections of (name, value) pairs and scalar variables.

The naming follows ModSecurity so rule ids, exclusions and audit events read the same as with ModSecurity:
query and form arguments are URL-decoded (`+` as space); JSON bodies are flattened as its JSON processor does
(`json.a.b`, array items `json.a.array_0`); multipart parts without a filename are arguments, file parts give
FILES (filename) and FILES_NAMES (field name); cookies and headers are not decoded. Checked against
libmodsecurity 3.0.15 (tests/stages/input/crs/test_differential.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.stages.input.crs.transforms import url_decode

Pairs = list[tuple[str, str]]


@dataclass(slots=True)
class CrsRequest:
    """What the rules can see of one request. Build it with `from_parts`."""

    collections: dict[str, Pairs] = field(default_factory=dict)
    scalars: dict[str, str] = field(default_factory=dict)

    def pairs(self, name: str) -> Pairs:
        return self.collections.get(name, [])


def parse_args(text: str, limit: int) -> Pairs:
    """`a=1&b=%27x+y&c`: names and values URL-decoded; a bare name has an empty value."""
    out: Pairs = []
    for chunk in text.split("&"):
        if not chunk:
            continue
        name, _, value = chunk.partition("=")
        out.append((url_decode(name), url_decode(value)))
        if len(out) >= limit:
            break
    return out


def parse_cookies(header: str) -> Pairs:
    out: Pairs = []
    for chunk in header.split(";"):
        name, _, value = chunk.strip().partition("=")
        if name:
            out.append((name, value))
    return out


def flatten_json(doc: Any, prefix: str = "json") -> Pairs:
    """ModSecurity's JSON processor: objects by `.key`, arrays by `.array_N`; null as '' and empty
    containers produce nothing."""
    out: Pairs = []
    stack: list[tuple[str, Any]] = [(prefix, doc)]
    while stack:
        name, value = stack.pop()
        if isinstance(value, dict):
            members: list[tuple[str, Any]] = [(f"{name}.{k}", v) for k, v in value.items()]
            members.reverse()
            stack.extend(members)
        elif isinstance(value, list):
            items: list[tuple[str, Any]] = [(f"{name}.array_{i}", v) for i, v in enumerate(value)]
            items.reverse()
            stack.extend(items)
        elif value is None:
            out.append((name, ""))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        elif isinstance(value, str):
            out.append((name, value))
        else:
            out.append((name, orjson.dumps(value).decode()))
    return out


@dataclass(frozen=True, slots=True)
class Part:
    """One multipart part as the rules see it."""

    name: str
    filename: str | None
    text: str
    headers: tuple[tuple[str, str], ...] = ()


def from_parts(method: str, target: str, version: str, headers: Iterable[tuple[str, str]], *,
               remote_addr: str = "127.0.0.1", body: bytes = b"", processor: str = "",
               body_args: Pairs | None = None, parts: Iterable[Part] = (), limit: int = 1024) -> CrsRequest:
    """The request's variables. `processor` is URLENCODED, JSON, MULTIPART, XML or '' (no body processor);
    `body_args` are the pairs the body processor produced (form fields or flattened JSON)."""
    req = CrsRequest()
    cols, sc = req.collections, req.scalars
    path, _, query = target.partition("?")
    header_pairs = [(k, v) for k, v in headers]
    cookies: Pairs = []
    for name, value in header_pairs:
        if name.lower() == "cookie":
            cookies += parse_cookies(value)
    get = parse_args(query, limit) if query else []
    post = list(body_args or [])
    files: Pairs = []
    files_names: Pairs = []
    part_headers: Pairs = []
    for part in parts:
        if part.filename is not None:
            files.append((part.name, part.filename))
            files_names.append((part.name, part.name))
        else:
            post.append((part.name, part.text))
        part_headers += [(part.name, f"{k}: {v}") for k, v in part.headers]
    cols["ARGS_GET"] = get
    cols["ARGS_POST"] = post
    cols["ARGS"] = get + post
    cols["ARGS_GET_NAMES"] = [(k, k) for k, _ in get]
    cols["ARGS_POST_NAMES"] = [(k, k) for k, _ in post]
    cols["ARGS_NAMES"] = [(k, k) for k, _ in get + post]
    cols["REQUEST_HEADERS"] = header_pairs
    cols["REQUEST_HEADERS_NAMES"] = [(k, k) for k, _ in header_pairs]
    cols["REQUEST_COOKIES"] = cookies
    cols["REQUEST_COOKIES_NAMES"] = [(k, k) for k, _ in cookies]
    cols["FILES"] = files
    cols["FILES_NAMES"] = files_names
    cols["MULTIPART_PART_HEADERS"] = part_headers
    decoded_target = _percent_decode(target)
    decoded_path = _percent_decode(path)
    sc["REQUEST_METHOD"] = method
    sc["REQUEST_PROTOCOL"] = f"HTTP/{version}"
    sc["REQUEST_LINE"] = f"{method} {target} HTTP/{version}"
    sc["REQUEST_URI"] = decoded_target
    sc["REQUEST_URI_RAW"] = target
    sc["REQUEST_FILENAME"] = decoded_path
    sc["REQUEST_BASENAME"] = decoded_path.rsplit("/", 1)[-1]
    sc["QUERY_STRING"] = query
    sc["REMOTE_ADDR"] = remote_addr
    sc["REQBODY_PROCESSOR"] = processor
    sc["REQBODY_ERROR"] = "0"
    sc["UNIQUE_ID"] = "0"
    sc["DURATION"] = "0"
    sc["ARGS_COMBINED_SIZE"] = str(sum(len(k) + len(v) for k, v in get + post))
    sc["FILES_COMBINED_SIZE"] = "0"
    if body:  # ModSecurity v3 fills REQUEST_BODY for every body processor (checked with 3.0.15)
        sc["REQUEST_BODY"] = body.decode("utf-8", "replace")
    return req


def _percent_decode(text: str) -> str:
    """REQUEST_URI / REQUEST_FILENAME: %XX decoded, `+` and `%uXXXX` kept (as ModSecurity v3 does)."""
    if "%" not in text:
        return text
    return url_decode(text.replace("+", "\x00PLUS\x00")).replace("\x00PLUS\x00", "+")
