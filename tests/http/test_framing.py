"""The framing checks on their own (the parser is strict too; these must hold even if it were not)."""

from __future__ import annotations

import pytest

from bastion.http.framing import check_head

H = [(b"Host", b"a")]
TE = (b"Transfer-Encoding", b"chunked")


@pytest.mark.parametrize(("version", "headers", "status", "reason"), [
    ("1.1", H, None, None),
    ("1.1", [*H, TE], None, None),
    ("1.1", [*H, (b"transfer-encoding", b" Chunked ")], None, None),  # RFC 9112 §7: codings are case-insensitive
    ("1.1", [*H, (b"Content-Length", b"3")], None, None),
    ("1.1", [(b"HOST", b"a"), (b"CONTENT-LENGTH", b"0")], None, None),  # field names are case-insensitive
    ("1.1", [*H, (b"Content-Length", b"3"), TE], 400, "content_length_with_transfer_encoding"),
    ("1.1", [*H, (b"Content-Length", b"3"), (b"Content-Length", b"3")], 400, "duplicate_content_length"),
    ("1.1", [*H, (b"Content-Length", b"-1")], 400, "bad_content_length"),
    ("1.1", [*H, (b"Content-Length", b"")], 400, "bad_content_length"),
    ("1.1", [*H, (b"Transfer-Encoding", b"gzip, chunked")], 400, "bad_transfer_encoding"),
    ("1.1", [*H, (b"Transfer-Encoding", b"gzip")], 400, "bad_transfer_encoding"),
    ("1.1", [*H, TE, TE], 400, "bad_transfer_encoding"),
    ("1.0", [*H, TE], 400, "transfer_encoding_http10"),
    ("1.0", [(b"Content-Length", b"3"), TE], 400, "transfer_encoding_http10"),
    ("1.1", [], 400, "bad_host"),
    ("1.1", [*H, *H], 400, "bad_host"),
    ("1.0", [], None, None),  # HTTP/1.0 may omit Host
    ("1.0", H, None, None),
    ("1.0", [*H, *H], 400, "bad_host"),  # but never repeat it
    ("1.1", [*H, (b"X", b"a\x00")], 400, "bad_header_value"),
    ("1.1", [*H, (b"X", b"a\rb")], 400, "bad_header_value"),
    ("1.1", [*H, (b"X", b"a\nb")], 400, "bad_header_value"),
    ("1.1", [(b"Host", b"a\r\nX: b")], 400, "bad_header_value"),
    ("2.0", H, 505, "http_version_not_supported"),
    ("0.9", H, 505, "http_version_not_supported"),
])
def test_check_head(version, headers, status, reason):
    error = check_head(version, headers)
    assert ((error.status, error.reason) if error else (None, None)) == (status, reason)
    if error is not None:
        assert error.message  # the operator's detail is never empty
