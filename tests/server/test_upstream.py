"""The HTTP/1.1 upstream client without sockets: a response parsed into the sink, the deadlines on its head and
body, what makes a connection unusable, and the pool's bounds."""

from __future__ import annotations

import asyncio
import contextlib

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


@contextlib.asynccontextmanager
async def _silent_server():
    """A TCP server that accepts and says nothing; its port. Every accepted connection is closed at the end."""
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)  # the closed transports let go of their sockets


async def _loop_turns_while(awaitable):
    """(result, turns of the event loop that passed while `awaitable` ran): a task yielding once per turn."""
    turns = 0
    running = True

    async def ticker():
        nonlocal turns
        while running:
            await asyncio.sleep(0)
            turns += 1

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)  # the ticker is running
    try:
        result = await awaitable
    finally:
        running = False
        await tick
    return result, turns


async def test_a_new_connection_costs_no_more_turns_of_the_loop_than_the_connect_itself():
    """On a saturated gateway every turn of the loop is a whole batch of other requests: the request that opens a
    connection waits as many batches as the connect takes turns. `wait_for` ran the address lookup and the connect
    as tasks of their own: 9 turns under uvloop (11 under asyncio's loop) where the connect alone takes 3 (5)."""
    loop = asyncio.get_running_loop()
    async with _silent_server() as port:
        up = UpstreamPool(Upstream("api", "http", "127.0.0.1", port, ""), 2)
        (transport, _), bare = await _loop_turns_while(loop.create_connection(asyncio.Protocol, "127.0.0.1", port))
        transport.close()
        conn, turns = await _loop_turns_while(up.acquire(5.0))
        assert isinstance(conn, UpstreamConnection) and not conn.closed
        assert turns <= bare
        conn.close()


async def test_an_upstream_that_never_completes_the_connect_times_out():
    """The TCP connect succeeds, the TLS handshake never answers: `upstream_connect_timeout`, 504."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with _silent_server() as port:
        up = UpstreamPool(Upstream("api", "https", "127.0.0.1", port, ""), 2, context)
        with pytest.raises(UpstreamError) as caught:
            await asyncio.wait_for(up.acquire(0.2), 5.0)
        assert (caught.value.reason, caught.value.status) == ("upstream_connect_timeout", 504)
        assert up._open == 0  # the slot is given back


async def test_a_pool_waiter_that_gets_no_connection_in_time_is_refused():
    up = pool(size=1)
    up._open = 1  # its one connection is busy and stays so
    with pytest.raises(UpstreamError) as caught:
        await up.acquire(0.05)
    assert (caught.value.reason, caught.value.status) == ("upstream_pool_exhausted", 503)
    assert all(waiter.done() for waiter in up._waiters)  # the timed-out waiter is not woken later
