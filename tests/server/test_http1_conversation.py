"""The HTTP/1.1 server connection as conversations, without sockets: bytes in, the exchanges the handler sees
and the bytes that go out (h11's style). The transport is in memory; the loop is real."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bastion.server.body import BodyTimeout, BodyTooLarge, ClientGone
from bastion.server.deadlines import NEVER, deadlines
from bastion.server.http1 import H1Exchange, Http1Connection, ServerLimits
from tests.server.memory import MemoryTransport

Handler = Callable[[H1Exchange], Awaitable[None]]


class Conversation:
    """One client connection: `send` bytes, `settle` the loop, read what went out in `transport`."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.seen: list[H1Exchange] = []
        self.errors: list[str] = []

        async def record(ex: H1Exchange) -> None:
            self.seen.append(ex)
            await handler(ex)

        def on_error(peer: str, error: object, target: str) -> str:
            self.errors.append(getattr(error, "reason", ""))
            return "rid-1"

        self.conn = Http1Connection(record, limits or ServerLimits(), set(), on_error)
        self.transport = MemoryTransport()
        self.conn.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    async def settle(self) -> None:
        for _ in range(10):  # let the serving task run what the bytes started
            await asyncio.sleep(0)


async def ok(ex: H1Exchange) -> None:
    ex.respond(200, [("content-type", "text/plain")], b"hi")


async def echo(ex: H1Exchange) -> None:
    ex.limit_body(16)
    try:
        body = await ex.read_body()
    except BodyTooLarge:
        ex.problem(413, None, "rid", close=True)
        return
    ex.respond(200, [], body)


async def test_a_get_is_one_exchange_and_one_write():
    talk = Conversation(ok)
    talk.send(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: z\r\n\r\n")
    await talk.settle()
    [ex] = talk.seen
    assert (ex.method, ex.target, ex.version, ex.headers) == ("GET", "/a?b=1", "1.1", [("host", "x"), ("x-y", "z")])
    assert (ex.peer, ex.tls, ex.has_body, ex.body_complete) == ("192.0.2.7", False, False, True)
    assert talk.transport.take() == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi")
    assert not talk.transport.closed  # keep-alive


async def test_pipelined_requests_are_answered_in_order_and_the_second_waits():
    talk = Conversation(ok)
    talk.send(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert talk.transport.paused  # a second request waiting: no more is read until the first is answered
    await talk.settle()
    assert [ex.target for ex in talk.seen] == ["/1", "/2"]
    out = talk.transport.take()
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"connection: close\r\n\r\nhi")
    assert talk.transport.closed


async def test_a_body_arriving_in_pieces_is_read_whole():
    talk = Conversation(echo)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await talk.settle()
    assert talk.transport.take() == b""  # the handler waits for the rest
    talk.send(b"2\r\nde\r\n0\r\n\r\n")
    await talk.settle()
    assert talk.transport.take().endswith(b"content-length: 5\r\n\r\nabcde")


BODIES = [
    ("declared_over_the_limit_arrived_first", b"Content-Length: 20\r\n\r\n" + b"x" * 20),
    ("chunked_past_the_limit", b"Transfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n1\r\ny\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "rest"), BODIES, ids=[c[0] for c in BODIES])
async def test_a_body_past_the_limit_is_refused_and_the_connection_closed(name, rest):
    talk = Conversation(echo)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\n" + rest)
    await talk.settle()
    out = talk.transport.take()
    assert out.startswith(b"HTTP/1.1 413 ") and b"connection: close" in out
    assert talk.transport.closed


async def test_expect_100_continue_is_answered_only_when_the_body_is_wanted():
    async def refuse(ex: H1Exchange) -> None:
        ex.problem(403, None, "rid")

    talk = Conversation(refuse)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    await talk.settle()
    out = talk.transport.take()
    assert out.startswith(b"HTTP/1.1 403 ") and b"100 Continue" not in out
    assert talk.transport.closed  # the unread body cannot be skipped safely

    talk = Conversation(echo)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
    await talk.settle()
    assert talk.transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    talk.send(b"abc")
    await talk.settle()
    assert talk.transport.take().endswith(b"\r\n\r\nabc")


async def test_malformed_framing_is_a_problem_and_a_close_and_never_reaches_the_handler():
    talk = Conversation(ok)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    await talk.settle()
    out = talk.transport.take()
    assert out.startswith(b"HTTP/1.1 400 ") and b"x-request-id: rid-1" in out and talk.transport.closed
    assert talk.seen == [] and talk.errors


async def test_a_stalled_body_times_out_on_the_swept_deadline():
    result: list[object] = []

    async def read(ex: H1Exchange) -> None:
        try:
            await ex.read_body()
        except BodyTimeout as error:
            result.append(error)

    talk = Conversation(read, ServerLimits(body_idle_timeout=30.0))
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    await talk.settle()
    [ex] = talk.seen
    body = ex.body
    assert body.deadline != NEVER and body in deadlines()._members  # watched by the sweep, no timer of its own
    body.expire()  # what the sweep does once the deadline has passed
    await talk.settle()
    assert isinstance(result[0], BodyTimeout)
    assert body.deadline == NEVER and body not in deadlines()._members


async def test_the_client_leaving_fails_a_read_with_client_gone():
    result: list[object] = []

    async def read(ex: H1Exchange) -> None:
        try:
            await ex.read_body()
        except ClientGone as error:
            result.append(error)
            raise

    talk = Conversation(read)
    talk.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    await talk.settle()
    talk.conn.connection_lost(None)
    await talk.settle()
    assert isinstance(result[0], ClientGone)


async def test_head_and_http10_framing():
    async def stream(ex: H1Exchange) -> None:
        ex.start_response(200, [], length=None)
        ex.write(b"data")

    talk = Conversation(stream)
    talk.send(b"GET / HTTP/1.0\r\n\r\n")  # HTTP/1.0: no chunked encoding, the body ends with the connection
    await talk.settle()
    assert talk.transport.take() == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata"
    assert talk.transport.closed

    talk = Conversation(ok)
    talk.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    await talk.settle()
    assert talk.transport.take().endswith(b"content-length: 2\r\n\r\n")  # the length, never the body
