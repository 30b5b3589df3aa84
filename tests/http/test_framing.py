"""The framing checks on their own (the parser is strict too; these must hold even if it were not)."""

from __future__ import annotations

import pytest

from bastion.http.framing import check_head

H = [(b"Host", b"a")]


@pytest.mark.parametrize(("version", "headers", "reason"), [
    ("1.1", H, None),
    ("1.1", [*H, (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], "content_length_with_transfer_encoding"),
    ("1.1", [*H, (b"Content-Length", b"3"), (b"Content-Length", b"3")], "duplicate_content_length"),
    ("1.1", [*H, (b"Content-Length", b"-1")], "bad_content_length"),
    ("1.1", [*H, (b"Transfer-Encoding", b"gzip, chunked")], "bad_transfer_encoding"),
    ("1.1", [*H, (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], "bad_transfer_encoding"),
    ("1.0", [*H, (b"Transfer-Encoding", b"chunked")], "transfer_encoding_http10"),
    ("1.1", [], "bad_host"),
    ("1.1", [*H, *H], "bad_host"),
    ("1.0", [], None),
    ("1.1", [*H, (b"X", b"a\x00")], "bad_header_value"),
    ("2.0", H, "http_version_not_supported"),
])
def test_check_head(version, headers, reason):
    error = check_head(version, headers)
    assert (error.reason if error else None) == reason
