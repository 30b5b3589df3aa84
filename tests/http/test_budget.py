"""FramingBudget with the real parser (httptools): pieces cut at exact framing boundaries, one byte over refused."""

from __future__ import annotations

import httptools
import pytest

from bastion.http.budget import FramingBudget
from bastion.http.framing import FramingError


class _Conversation:
    """The parser driven the way Http1Connection drives it: budget first, then the parser."""

    def __init__(self, limit: int) -> None:
        self.budget = FramingBudget(limit)
        self.parser = httptools.HttpRequestParser(self)
        self.messages = 0
        self.bodies: list[bytes] = []
        self._chunked = False
        self._length: int | None = None

    def on_message_begin(self) -> None:
        self._chunked, self._length = False, None
        self.bodies.append(b"")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"transfer-encoding":
            self._chunked = True
        elif name.lower() == b"content-length":
            self._length = int(value)

    def on_headers_complete(self) -> None:
        self.budget.head_done(chunked=self._chunked, content_length=self._length)

    def on_body(self, body: bytes) -> None:
        self.bodies[-1] += body

    def on_message_complete(self) -> None:
        self.budget.message_done()
        self.messages += 1

    def feed(self, data: bytes) -> FramingError | None:
        start = 0
        while start < len(data):
            end = self.budget.take(data, start)
            if isinstance(end, FramingError):
                return end
            assert end > start, "a piece is never empty"
            self.parser.feed_data(memoryview(data)[start:end])
            start = end
        return None


def _head(size: int) -> bytes:
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


STREAM = (b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n"
          + b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
          + b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
          + b"3;ext=1\r\nabc\r\n10\r\n" + b"\r\n" * 8 + b"\r\n0\r\nX-T: 1\r\n\r\n"
          + _head(100))


@pytest.mark.parametrize("split", range(0, len(STREAM), 7))
def test_pipelined_messages_pass_at_every_split_point(split):
    conv = _Conversation(100)  # the last head takes exactly the limit: split anywhere, it is still counted exactly
    assert conv.feed(STREAM[:split]) is None
    assert conv.feed(STREAM[split:]) is None
    assert conv.messages == 4
    assert conv.bodies == [b"", b"hello", b"abc" + b"\r\n" * 8, b""]


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("head_one_over", _head(101), "header_too_large"),
    ("pipelined_head_one_over", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + _head(101), "header_too_large"),
    ("after_a_body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" + _head(101), "header_too_large"),
    ("unended_line", b"GET / HTTP/1.1\r\nX: " + b"a" * 200, "header_too_large"),
    ("empty_lines_count", b"\r\n" * 51, "header_too_large"),
    ("bare_cr", b"\r\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", "bare_cr"),
    ("cr_then_request", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\rGET / HTTP/1.1\r\n", "bare_cr"),
    ("chunk_line", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 98 + b"\r\n",
     "chunk_framing_too_large"),
    ("trailers", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"t" * 98,
     "chunk_framing_too_large"),
])
def test_one_byte_over_a_window_is_refused_before_the_parser_sees_it(name, data, reason):
    for split in (len(data), 1, len(data) // 2):  # whole, and across segments
        conv = _Conversation(100)
        error = conv.feed(data[:split]) or conv.feed(data[split:])
        assert isinstance(error, FramingError)
        assert error.reason == reason


def test_exactly_the_limit_is_accepted_in_every_window():
    chunk_line = b"1;" + b"e" * 96 + b"\r\n"  # 100 bytes
    trailers = b"X: " + b"t" * 93 + b"\r\n\r\n"  # 100 bytes
    data = (_head(100) + b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk_line + b"z\r\n0\r\n" + trailers)
    conv = _Conversation(100)
    assert conv.feed(data) is None
    assert conv.messages == 2
