"""gRPC status codes for Bastion's denials, trailers-only answers, and `grpc-timeout` (PROTOCOL-HTTP2.md)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from bastion.context import Deny

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 7, 8, 12, 13, 14, 16

# the HTTP status of a Deny -> the gRPC status a gRPC client understands
_FROM_HTTP = {
    400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED, 405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED, 411: INVALID_ARGUMENT, 413: RESOURCE_EXHAUSTED, 415: INVALID_ARGUMENT,
    422: INVALID_ARGUMENT, 429: RESOURCE_EXHAUSTED, 431: RESOURCE_EXHAUSTED, 500: INTERNAL, 502: UNAVAILABLE,
    503: UNAVAILABLE, 504: DEADLINE_EXCEEDED,
}
_MESSAGES = {
    INVALID_ARGUMENT: "invalid argument", DEADLINE_EXCEEDED: "deadline exceeded",
    PERMISSION_DENIED: "permission denied", RESOURCE_EXHAUSTED: "resource exhausted",
    UNIMPLEMENTED: "unknown method", INTERNAL: "internal error", UNAVAILABLE: "service unavailable",
    UNAUTHENTICATED: "authentication required",
}
_DROP_FROM_DENY = frozenset({"content-type", "content-length", "grpc-status", "grpc-message"})


def is_grpc(headers: list[tuple[str, str]]) -> bool:
    """A gRPC request: `content-type: application/grpc` (or `application/grpc+proto`, ...)."""
    for name, value in headers:
        if name == "content-type":
            return value.startswith("application/grpc")
    return False


def grpc_status(deny: Deny) -> int:
    if deny.status >= 500 and deny.status not in _FROM_HTTP:
        return UNAVAILABLE
    return _FROM_HTTP.get(deny.status, PERMISSION_DENIED if deny.status < 500 else INTERNAL)


def grpc_message(text: str) -> str:
    """Percent-encoded as the gRPC spec asks (printable ASCII except '%' kept)."""
    return quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def grpc_problem(ex: Any, deny: Deny, request_id: str, headers: list[tuple[str, str]] | None = None) -> int:
    """Answer a Deny the way gRPC clients understand: HTTP 200, trailers-only, `grpc-status`/`grpc-message`.

    The message is the Deny's safe `detail`, or a generic phrase; never its `log_detail`. Returns the gRPC code.
    """
    code = grpc_status(deny)
    fields = [("content-type", "application/grpc"), ("grpc-status", str(code)),
              ("grpc-message", grpc_message(deny.detail or _MESSAGES.get(code, "denied"))),
              ("x-request-id", request_id)]
    for name, value in (*deny.headers, *(headers or ())):
        if name.lower() not in _DROP_FROM_DENY:
            fields.append((name.lower(), value))
    ex.respond(200, fields, b"")
    return code


def trailers(code: int, message: str = "") -> list[tuple[str, str]]:
    fields = [("grpc-status", str(code))]
    if message:
        fields.append(("grpc-message", grpc_message(message)))
    return fields


_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """`grpc-timeout` in seconds (None when absent). Raises ValueError when malformed."""
    if value is None:
        return None
    match = _TIMEOUT.match(value.strip())
    if match is None:
        raise ValueError(f"malformed grpc-timeout {value[:20]!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_timeout(seconds: float) -> str:
    """The shortest exact-enough `grpc-timeout` (at most 8 digits), rounded down never below 1 unit."""
    for unit, scale in (("n", 1e-9), ("u", 1e-6), ("m", 1e-3), ("S", 1.0), ("M", 60.0), ("H", 3600.0)):
        amount = int(seconds / scale)
        if amount < 100_000_000:
            return f"{max(amount, 1)}{unit}"
    return "99999999H"
