"""The HTTP/1.1 upstream client without sockets: a response parsed into the sink, the deadlines on its head and
body, what makes a connection unusable, and the pool's bounds."""

from __future__ import annotations

import asyncio

import pytest

from bastion.compile import Upstream
from bastion.server.deadlines import NEVER
from bastion.server.upstream import UpstreamConnection, UpstreamError, UpstreamPool, internal_address
from tests.server.memory import MemoryTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


class Sink:
    """Records what the upstream connection hands over."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.paused = False

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.events.append(("head", status, headers, keep_alive))

    def on_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_end(self) -> None:
        self.events.append("end")

    def flush(self) -> None:
        pass


def pool(size: int = 2) -> UpstreamPool:
    return UpstreamPool(Upstream("api", "http", "127.0.0.1", 9, ""), size)


def connection(up: UpstreamPool | None = None) -> tuple[UpstreamConnection, MemoryTransport]:
    conn = UpstreamConnection(up or pool())
    transport = MemoryTransport()
    conn.connection_made(transport)
    return conn, transport


async def test_a_response_goes_to_the_sink_and_the_connection_stays_reusable():
    conn, _ = connection()
    sink = Sink()
    done = conn.begin(sink, head_only=False)  # type: ignore[arg-type]
    conn.expect_response(5.0)
    assert conn.deadline != NEVER
    conn.data_received(OK[:30])
    conn.data_received(OK[30:])
    await done
    assert sink.events == [("head", 200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], True),
                           ("body", b"hello"), "end"]
    assert conn.reusable and conn.deadline == NEVER


# (name, bytes from the upstream, the error reason, its status)
BROKEN = [
    ("malformed", b"HTTP/1.1 2OO OK\r\n\r\n", "upstream_bad_response", 502),
    ("garbage", b"\x16\x03\x01 tls to a plain port", "upstream_bad_response", 502),
]


@pytest.mark.parametrize(("name", "data", "reason", "status"), BROKEN, ids=[c[0] for c in BROKEN])
async def test_a_malformed_response_is_an_upstream_error_and_closes(name, data, reason, status):
    conn, transport = connection()
    done = conn.begin(Sink(), head_only=False)  # type: ignore[arg-type]
    conn.data_received(data)
    with pytest.raises(UpstreamError) as caught:
        await done
    assert (caught.value.reason, caught.value.status) == (reason, status)
    assert transport.closed and not conn.reusable


async def test_deadlines_on_the_head_then_on_each_body_gap():
    conn, _ = connection()
    done = conn.begin(Sink(), head_only=False)  # type: ignore[arg-type]
    conn.expect_response(5.0)
    conn.expire()  # the sweep found the deadline passed before any head
    with pytest.raises(UpstreamError) as caught:
        await done
    assert (caught.value.reason, caught.value.status) == ("upstream_timeout", 504)

    conn, _ = connection()
    sink = Sink()
    done = conn.begin(sink, head_only=False)  # type: ignore[arg-type]
    conn.expect_response(5.0)
    conn.data_received(OK[:-2])
    sink.paused = True  # the client is the slow one: the upstream waits, it is not stalled
    conn.expire()
    assert not done.done() and conn.deadline != NEVER
    sink.paused = False
    conn.expire()
    with pytest.raises(UpstreamError) as caught:
        await done
    assert caught.value.reason == "upstream_body_timeout"


@pytest.mark.parametrize(("received", "retryable"), [(b"", True), (b"HTTP/1.1 200 OK\r\n", False)])
async def test_a_close_before_any_byte_may_be_retried_on_a_fresh_connection(received, retryable):
    conn, _ = connection()
    done = conn.begin(Sink(), head_only=False)  # type: ignore[arg-type]
    if received:
        conn.data_received(received)
    conn.connection_lost(None)
    with pytest.raises(UpstreamError) as caught:
        await done
    assert caught.value.reason == "upstream_closed" and caught.value.retryable is retryable


async def test_bytes_nobody_asked_for_close_the_connection():
    conn, transport = connection()
    conn.data_received(OK)
    assert transport.closed


async def test_a_head_response_completes_at_its_head_and_is_not_reused():
    conn, _ = connection()
    sink = Sink()
    done = conn.begin(sink, head_only=True)  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    await done
    assert sink.events[-1] == "end" and not conn.reusable


async def test_the_pool_reuses_the_most_recent_idle_connection_and_drops_stale_ones():
    up = pool()
    first, _ = connection(up)
    second, _ = connection(up)
    now = [100.0]
    up._clock = lambda: now[0]
    for conn in (first, second):
        conn.reusable = True
        up.release(conn)
    assert up.idle() is second
    now[0] += 31.0  # past the idle timeout: the upstream may have closed it
    assert up.idle() is None and first.closed


async def test_a_saturated_pool_refuses_instead_of_queueing_without_bound():
    up = pool(size=1)
    up._open = 1  # its one connection is busy
    waiters = [asyncio.ensure_future(up.acquire(5.0))]  # the queue holds `size` waiters
    await asyncio.sleep(0)
    with pytest.raises(UpstreamError) as caught:
        await up.acquire(5.0)
    assert (caught.value.reason, caught.value.status) == ("upstream_pool_exhausted", 503)
    for waiter in waiters:
        waiter.cancel()


@pytest.mark.parametrize(("address", "internal"), [
    ("10.1.2.3", True), ("127.0.0.1", True), ("169.254.169.254", True), ("::ffff:127.0.0.1", True),
    ("fd00:ec2::254", True), ("100.100.100.200", True), ("93.184.216.34", False), ("2606:4700::1111", False),
])
def test_internal_addresses(address, internal):
    assert internal_address(address) is internal


async def test_a_name_that_resolves_inside_is_refused_unless_allowed():
    up = UpstreamPool(Upstream("api", "http", "localhost", 9, ""), 1)
    with pytest.raises(UpstreamError) as caught:
        await up.acquire(5.0)
    assert caught.value.reason in ("upstream_internal_address", "upstream_dns_failed")
