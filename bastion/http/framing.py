"""Request framing checks (RFC 9112): the request-smuggling boundary.

llhttp (under httptools, strict mode) already refuses most ambiguous framing; these checks run on every
parsed head as well, so that a parser upgrade or a leniency flag can never reopen the hole. Every refusal is
answered with 400 and the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FramingError:
    status: int
    reason: str
    message: str  # operator detail


_CTL = b"\x00\r\n"  # never in a header value (RFC 9110 §5.5)


def check_head(version: str, headers: list[tuple[bytes, bytes]]) -> FramingError | None:
    """Validate the framing headers of a request head; None when it is unambiguous."""
    if version not in ("1.1", "1.0"):
        return FramingError(505, "http_version_not_supported", f"HTTP/{version}")
    content_length = 0
    transfer_encoding: list[bytes] = []
    hosts = 0
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            content_length += 1
            if not value.isdigit():  # RFC 9112 §6.3: an invalid Content-Length is unrecoverable
                return FramingError(400, "bad_content_length", "Content-Length is not a decimal number")
        elif lname == b"transfer-encoding":
            transfer_encoding.append(value)
        elif lname == b"host":
            hosts += 1
        # one pass in C, no copy when nothing is deleted; `b"\x00" in value` first tries the needle as an integer
        # and formats a TypeError (~2 K instructions each, three per header)
        if len(value.translate(None, _CTL)) != len(value):
            return FramingError(400, "bad_header_value", "NUL, CR or LF in a header value")
    if content_length > 1:  # differing ones are smuggling; identical ones are never needed
        return FramingError(400, "duplicate_content_length", "several Content-Length fields")
    if transfer_encoding:
        if version == "1.0":  # RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing
            return FramingError(400, "transfer_encoding_http10", "Transfer-Encoding in an HTTP/1.0 request")
        if content_length:  # RFC 9112 §6.1: CL with TE -> reject and close
            return FramingError(400, "content_length_with_transfer_encoding", "Content-Length with Transfer-Encoding")
        if len(transfer_encoding) != 1 or transfer_encoding[0].strip().lower() != b"chunked":
            # only a lone `chunked` is accepted: any other coding would be ours to decode and re-frame
            return FramingError(400, "bad_transfer_encoding", "Transfer-Encoding other than `chunked`")
    if version == "1.1" and hosts != 1:  # RFC 9112 §3.2: exactly one Host
        return FramingError(400, "bad_host", "missing or repeated Host")
    if hosts > 1:
        return FramingError(400, "bad_host", "repeated Host")
    return None
