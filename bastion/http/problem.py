"""RFC 9457 problem documents: what the client sees when Bastion refuses a request.

The client gets the status, a generic title and a safe sentence; the exact reason stays in the audit event.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

PROBLEM_TYPE = "about:blank"  # RFC 9457 §4.2.1: the title is then the status phrase

# Safe public sentences for statuses where a stage gave none. They never name a check, key or host.
_DEFAULT_DETAIL = {
    400: "The request is malformed.",
    401: "Valid credentials are required.",
    403: "The request is not allowed.",
    404: "No API is published at this path.",
    405: "This method is not allowed on this path.",
    408: "The request was not received in time.",
    413: "The request body is too large.",
    415: "The request body's media type is not accepted.",
    429: "Too many requests.",
    431: "The request's header section is too large.",
    500: "The gateway could not process the request.",
    502: "The upstream service could not be reached.",
    503: "The service is temporarily unavailable.",
    504: "The upstream service did not answer in time.",
}


_PHRASES = {int(s): s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1") for code, phrase in _PHRASES.items()}


def status_phrase(status: int) -> str:
    return _PHRASES.get(status, "Error")


def status_line(status: int) -> bytes:
    """`HTTP/1.1 200 OK\r\n` for an HTTP/1.1 response head."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Error\r\n".encode("latin-1")


def problem_body(status: int, detail: str | None, request_id: str, instance: str | None = None) -> bytes:
    """The JSON problem document for `status`."""
    doc: dict[str, object] = {
        "type": PROBLEM_TYPE,
        "title": status_phrase(status),
        "status": status,
        "detail": detail or _DEFAULT_DETAIL.get(status, status_phrase(status)),
        "request_id": request_id,
    }
    if instance:
        doc["instance"] = instance
    return orjson.dumps(doc)
