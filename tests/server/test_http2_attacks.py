"""HTTP/2's own attacks, driven with a raw client against the real gateway: each limit holds, is counted and
reported, and the worker still serves a normal request afterwards."""

from __future__ import annotations

import asyncio
import json

import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.server.test_http2 import assert_serves, h2_client, h2_gateway

pytestmark = pytest.mark.asyncio

REQUEST = [(":method", "GET"), (":path", "/shop/items"), (":scheme", "http"), (":authority", "gateway.test")]


async def assert_refused(client, gw, reason: str, code: int = ErrorCodes.ENHANCE_YOUR_CALM) -> None:
    await client.wait_closed()
    assert client.goaway is not None, f"no GOAWAY {gw.errors}"
    assert client.goaway.error_code == code, gw.errors
    assert client.goaway.error_code == code
    assert gw.stats[reason] == 1
    assert reason in [r for r, _ in gw.errors]
    await assert_serves(gw.port)


async def test_rapid_reset_is_refused_with_enhance_your_calm(tmp_path):
    # CVE-2023-44487: open a stream and cancel it at once, in a loop
    async with h2_gateway(tmp_path, max_resets=50) as gw:
        async with h2_client(gw.port) as client:
            for _ in range(500):
                sid = client.conn.get_next_available_stream_id()
                client.conn.send_headers(sid, REQUEST, end_stream=True)
                client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
            await assert_refused(client, gw, "h2_reset_flood")
            assert client.goaway.additional_data  # the request id of the audit event
        (conn,) = [c for c in gw.connections if not c.closed] or [None]
        assert conn is None or conn.idle


async def test_resets_under_the_limit_are_fine(tmp_path):
    async with h2_gateway(tmp_path, max_resets=50) as gw, h2_client(gw.port) as client:
        for _ in range(20):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, REQUEST, end_stream=True)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        client.flush()
        assert (await client.request("GET", "/shop/items")).status == 200
        assert gw.stats.counts == {}


def header_block(extra: list[tuple[str, str]]) -> bytes:
    return hpack.Encoder().encode([*REQUEST, *extra])


def split_block(block: bytes, piece: int) -> list[bytes]:
    """HEADERS + CONTINUATION frames carrying `block` in `piece`-byte fragments."""
    parts = [block[i:i + piece] for i in range(0, len(block), piece)]
    first = HeadersFrame(1, data=parts[0], flags=["END_STREAM"] + (["END_HEADERS"] if len(parts) == 1 else []))
    frames = [first.serialize()]
    for n, part in enumerate(parts[1:], 2):
        flags = ["END_HEADERS"] if n == len(parts) else []
        frames.append(ContinuationFrame(1, data=part, flags=flags).serialize())
    return frames


async def test_continuation_flood_is_refused(tmp_path):
    # 2024 CONTINUATION flood: a header block that never ends, one small frame at a time
    block = header_block([(f"x-{n}", "v" * 20) for n in range(200)])
    frames = split_block(block, 10)
    async with h2_gateway(tmp_path, max_continuation_frames=16) as gw, h2_client(gw.port) as client:
        await client.settle()
        client.raw(b"".join(frames[:-1]))  # never END_HEADERS
        await assert_refused(client, gw, "h2_continuation_flood")


async def test_oversized_header_block_is_refused(tmp_path):
    block = header_block([(f"x-{n}", "v" * 100) for n in range(100)])
    limits = {"max_header_block_bytes": 4096, "max_continuation_frames": 100}
    async with h2_gateway(tmp_path, **limits) as gw, h2_client(gw.port) as client:
        await client.settle()
        client.raw(b"".join(split_block(block, 1000)[:-1]))
        await assert_refused(client, gw, "h2_header_block_too_large")


async def test_hpack_bomb_is_refused(tmp_path):
    # one 4 KB value in the dynamic table, then referenced by one byte each: ~400 KB decoded from ~4 KB
    block = header_block([("x-bomb", "a" * 4000)] * 100)
    assert len(block) < 5000
    async with h2_gateway(tmp_path, max_header_list_size=16 * 1024) as gw, h2_client(gw.port) as client:
        await client.settle()
        client.raw(HeadersFrame(1, data=block, flags=["END_STREAM", "END_HEADERS"]).serialize())
        await assert_refused(client, gw, "h2_header_list_too_large")


async def test_too_many_header_fields_is_431(tmp_path):
    async with h2_gateway(tmp_path, max_headers=20) as gw, h2_client(gw.port) as client:
        stream = await client.request("GET", "/shop/items", [(f"x-{n}", "1") for n in range(30)])
        assert stream.status == 431
        assert json.loads(stream.body)["request_id"] == stream.headers["x-request-id"]
        assert gw.stats["header_too_large"] == 1
        assert (await client.request("GET", "/shop/items")).status == 200


@pytest.mark.parametrize("kind, frame, limit", [
    ("settings", lambda n: SettingsFrame(0, settings={0x4: 65535}), {"max_settings": 10}),
    ("ping", lambda n: PingFrame(0, opaque_data=n.to_bytes(8, "big")), {"max_pings": 10}),
    ("priority", lambda n: PriorityFrame(2 * n + 101, depends_on=0, stream_weight=16), {"max_priority": 50}),
    ("window_update", lambda n: WindowUpdateFrame(0, window_increment=1), {"max_window_updates": 100}),
])
async def test_control_frame_floods_are_refused(tmp_path, kind, frame, limit):
    async with h2_gateway(tmp_path, **limit) as gw, h2_client(gw.port) as client:
        await client.settle()
        client.raw(b"".join(frame(n).serialize() for n in range(1000)))
        await assert_refused(client, gw, f"h2_{kind}_flood")


async def test_empty_data_frame_flood_is_refused(tmp_path):
    async with h2_gateway(tmp_path, max_empty_frames=50) as gw, h2_client(gw.port) as client:
        sid = client.start("POST", "/shop/items", [], None, end=False)
        await client.settle()
        client.raw(DataFrame(sid, data=b"").serialize() * 500)
        await assert_refused(client, gw, "h2_empty_frame_flood")


async def test_streams_beyond_the_concurrency_limit_are_refused(tmp_path):
    async with h2_gateway(tmp_path, max_concurrent_streams=4) as gw, h2_client(gw.port) as client:
        # opened before the server's SETTINGS arrive: the client does not know the limit yet
        ids = [client.start("POST", "/shop/items", [], b"held", end=False) for _ in range(6)]
        await asyncio.wait_for(asyncio.gather(*(client.streams[i].done.wait() for i in ids[4:])), 5)
        assert [client.streams[i].reset for i in ids[4:]] == [ErrorCodes.REFUSED_STREAM] * 2
        for sid in ids[:4]:
            await client.send_body(sid, b"", end=True)
        await asyncio.wait_for(asyncio.gather(*(client.streams[i].done.wait() for i in ids[:4])), 5)
        assert [client.streams[i].status for i in ids[:4]] == [200] * 4
        assert gw.stats["h2_stream_refused"] == 2
        assert client.goaway is None


async def test_a_client_that_keeps_ignoring_the_limit_is_refused(tmp_path):
    async with h2_gateway(tmp_path, max_concurrent_streams=2, max_refused=10) as gw, h2_client(gw.port) as client:
        for _ in range(30):
            client.start("POST", "/shop/items", [], b"held", end=False)
        await assert_refused(client, gw, "h2_refused_flood")


async def test_zero_window_stall_resets_the_stream_and_closes_a_stalled_connection(tmp_path):
    # the client never opens its window: the response cannot be sent, and must not be held forever
    async with h2_gateway(tmp_path, stall_timeout=0.3) as gw, h2_client(gw.port, window=0, ack_data=False) as client:
        sid = client.start("GET", "/shop/items")
        await asyncio.wait_for(client.streams[sid].done.wait(), 5)
        assert client.streams[sid].status == 200 and client.streams[sid].reset == ErrorCodes.CANCEL
        await assert_refused(client, gw, "h2_connection_stalled")
        assert gw.stats["h2_zero_window_stall"] == 1


async def test_response_buffer_is_bounded_per_stream(tmp_path):
    async with h2_gateway(tmp_path, max_send_buffer=100, stall_timeout=30) as gw:
        async with h2_client(gw.port, window=0, ack_data=False) as client:
            sid = client.start("GET", "/shop/items")
            await asyncio.wait_for(client.streams[sid].done.wait(), 5)
            assert client.streams[sid].reset == ErrorCodes.CANCEL
            assert gw.stats["h2_send_buffer_full"] == 1
        await assert_serves(gw.port)


async def test_no_preface_is_closed(tmp_path):
    async with h2_gateway(tmp_path, preface_timeout=0.2) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        data = await asyncio.wait_for(reader.read(-1), 3)  # our SETTINGS, then GOAWAY and EOF
        assert data
        writer.close()
        await assert_serves(gw.port)
