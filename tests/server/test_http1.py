"""The data plane over real sockets: framing (request smuggling), limits, timeouts, streaming, keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.helpers import BASIC, exchange, parse_response, request, running_gateway

pytestmark = pytest.mark.asyncio

GET = b"GET /shop/items HTTP/1.1\r\nHost: a\r\n"

# Each of these must get 400 (or the given status) and a closed connection, never reach the upstream.
SMUGGLING = [
    ("cl_and_te", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("differing_cl", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("repeated_same_cl", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("malformed_cl", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("te_not_chunked", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("te_chunked_not_last", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te_gzip_chunked", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_http10", b"POST /shop/items HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bad_chunk_size", b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("obs_fold", GET + b"X-A: one\r\n two\r\n\r\n", 400),
    ("space_before_colon", b"GET /shop/items HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("nul_in_value", GET + b"X-A: a\x00b\r\n\r\n", 400),
    ("bare_cr_in_value", GET + b"X-A: a\rb\r\n\r\n", 400),
    ("missing_host", b"GET /shop/items HTTP/1.1\r\n\r\n", 400),
    ("repeated_host", GET + b"Host: b\r\n\r\n", 400),
    ("http2_preface_version", b"GET /shop/items HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("bad_method_token", b"G@T /shop/items HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("upgrade", GET + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400),
]


@pytest.mark.parametrize(("name", "raw", "status"), SMUGGLING, ids=[c[0] for c in SMUGGLING])
async def test_ambiguous_framing_is_refused_and_closed(tmp_path, name, raw, status):
    async with running_gateway(tmp_path, BASIC) as gw:
        port = gw.bound[0][1]
        # a valid request follows on the same connection: it must never be answered
        reply = await exchange(port, raw + b"GET /shop/items HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:80]
        assert reply.count(b"HTTP/1.1 ") == 1, "the connection must close after a framing error"
        code, headers, body = parse_response(reply)
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert json.loads(body)["status"] == status


async def test_oversized_header_section_gets_431(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        port = gw.bound[0][1]
        raw = GET + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"
        status, _, _ = parse_response(await exchange(port, raw))
        assert status == 431
        many = GET + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n"
        status, _, _ = parse_response(await exchange(port, many))
        assert status == 431


async def test_keep_alive_and_pipelining_answer_in_order(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        port = gw.bound[0][1]
        raw = (b"GET /shop/items/1 HTTP/1.1\r\nHost: a\r\n\r\n"
               b"GET /shop/items/2 HTTP/1.1\r\nHost: a\r\n\r\n"
               b"GET /shop/items/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        reply = await exchange(port, raw)
        assert reply.count(b"HTTP/1.1 200 OK") == 3
        assert reply.index(b"/shop/items/1") < reply.index(b"/shop/items/2") < reply.index(b"/shop/items/3")


async def test_chunked_request_is_reframed_for_the_upstream(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        raw = (b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = parse_response(await exchange(gw.bound[0][1], raw))
        assert status == 200
        seen = json.loads(body)
        assert seen["body_bytes"] == 11
        framing = {k for k in seen["headers"] if k in ("transfer-encoding", "content-length")}
        assert len(framing) == 1  # one framing header, chosen by the gateway (streamed or buffered body)


async def test_body_over_limit_refused_before_reading(tmp_path):
    config = BASIC.replace("identity: {required: false}", "identity: {required: false}\n    traffic: {max_body_bytes: 16}")
    async with running_gateway(tmp_path, config) as gw:
        port = gw.bound[0][1]
        status, headers, _ = await request(port, "POST", "/shop/items", body=b"x" * 17)
        assert status == 413
        status, _, _ = await request(port, "POST", "/shop/items", body=b"x" * 16)
        assert status == 200
        # chunked: refused the moment the body passes the limit
        raw = (b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"10\r\n" + b"y" * 16 + b"\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n")
        status, headers, _ = parse_response(await exchange(port, raw))
        assert status == 413
        assert headers["connection"] == "close"


async def test_header_timeout_gets_408(tmp_path):
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                           "admin: {address: 127.0.0.1, port: 0}\n  limits: {header_timeout: 200ms}")
    async with running_gateway(tmp_path, config) as gw:
        reply = await exchange(gw.bound[0][1], b"GET /shop/items HTTP/1.1\r\nHost: a\r\n", timeout=3)
        assert reply.startswith(b"HTTP/1.1 408 ")


async def test_body_idle_timeout_gets_408(tmp_path):
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                           "admin: {address: 127.0.0.1, port: 0}\n  limits: {body_idle_timeout: 200ms}")
    async with running_gateway(tmp_path, config) as gw:
        raw = b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
        reply = await exchange(gw.bound[0][1], raw, timeout=3)
        assert reply.startswith(b"HTTP/1.1 408 ")


async def test_unknown_route_404_and_method_405_are_problems(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        port = gw.bound[0][1]
        status, headers, body = await request(port, "GET", "/nowhere")
        doc = json.loads(body)
        assert status == 404 and headers["content-type"] == "application/problem+json"
        assert set(doc) >= {"type", "title", "status", "detail", "request_id"}
        assert doc["request_id"] == headers["x-request-id"]
        status, headers, _ = await request(port, "DELETE", "/shop/items/1")
        assert status == 405 and headers["allow"] == "GET, PUT"


@pytest.mark.parametrize("path", ["/shop/items/%2e%2e/x", "/shop/items/..", "/shop/items/a%2Fb",
                                  "/shop/items/a%5Cb", "/shop/%00", "/shop/items/%zz"])
async def test_ambiguous_paths_are_refused(tmp_path, path):
    async with running_gateway(tmp_path, BASIC) as gw:
        status, _, _ = await request(gw.bound[0][1], "GET", path)
        assert status == 400


async def test_upstream_down_is_502_and_slow_is_504(tmp_path):
    config = BASIC.replace("identity: {required: false}",
                           "identity: {required: false}\n    traffic: {upstream_timeout: 300ms}")
    async with running_gateway(tmp_path, config) as gw:
        status, _, _ = await request(gw.bound[0][1], "GET", "/shop/items/slow")
        assert status == 504
    dead = BASIC.replace("upstream: {upstream}", "upstream: http://127.0.0.1:1")
    async with running_gateway(tmp_path, dead) as gw:
        status, _, body = await request(gw.bound[0][1], "GET", "/shop/items")
        assert status == 502
        assert b"127.0.0.1:1" not in body  # no upstream address leaks


async def test_expect_100_continue(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
        writer.write(b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert final.startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_upstream_error_body_and_server_headers_do_not_leak(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        status, headers, body = await request(gw.bound[0][1], "GET", "/shop/items/fail")
        assert status == 500
        assert "server" not in headers
        assert headers["x-request-id"]


async def test_trickled_body_is_refused_by_the_minimum_rate(tmp_path):
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                           "admin: {address: 127.0.0.1, port: 0}\n"
                           "  limits: {min_body_rate: 100, min_body_rate_grace: 300ms, body_idle_timeout: 5s}")
    async with running_gateway(tmp_path, config) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
        writer.write(b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        async def collect() -> bytes:
            data = b""
            try:
                while chunk := await reader.read(65536):
                    data += chunk
            except ConnectionError:
                pass
            return data

        replies = asyncio.create_task(collect())
        for _ in range(20):  # one byte every 100 ms: 10 B/s, far below 100 B/s
            if replies.done():
                break
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                break  # the gateway answered and closed
            await asyncio.sleep(0.1)
        reply = await asyncio.wait_for(replies, 3)
        assert reply.startswith(b"HTTP/1.1 408 ")
        writer.close()


async def test_saturated_upstream_pool_answers_503_without_queueing_forever(tmp_path):
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}",
                           "admin: {address: 127.0.0.1, port: 0}\n  limits: {upstream_pool_size: 1}")
    config = config.replace("identity: {required: false}",
                            "identity: {required: false}\n    traffic: {upstream_connect_timeout: 200ms}")
    async with running_gateway(tmp_path, config) as gw:
        port = gw.bound[0][1]
        results = await asyncio.gather(*(request(port, "GET", "/shop/items/slow") for _ in range(4)))
        statuses = sorted(r[0] for r in results)
        assert statuses[0] == 200 and set(statuses[1:]) == {503}


async def test_a_slow_reader_pauses_the_upstream_instead_of_filling_gateway_memory(tmp_path):
    """Back-pressure end to end: while the client does not read, the bytes stay upstream, not in the gateway."""
    total = 64 * 1024 * 1024
    sent = {}

    class BigUpstream(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            sent["transport"] = transport

        def data_received(self, data):
            if b"\r\n\r\n" in data:
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
                self.transport.write(b"x" * total)  # buffered by this transport while the gateway is paused

    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(BigUpstream, "127.0.0.1", 0)
    config = BASIC.replace("upstream: {upstream}", f"upstream: http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}")
    try:
        async with running_gateway(tmp_path, config) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
            writer.write(b"GET /shop/items HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            await asyncio.sleep(1.0)  # the client reads nothing
            held_upstream = sent["transport"].get_write_buffer_size()
            assert held_upstream > total // 2, held_upstream  # most of it never left the upstream
            received = 0
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
            writer.close()
            assert received > total  # the whole body (and the head) arrived once the client read
    finally:
        upstream.close()


# ---- byte budget (bastion/http/budget.py): counted where the bytes arrive ----------------------------------

HEAD_LIMIT = 16 * 1024  # the default `limits.max_header_bytes`


def _head_of(size: int, *, close: bool = True) -> bytes:
    """A complete request head of exactly `size` bytes (request line to the empty line included)."""
    start = GET + (b"Connection: close\r\n" if close else b"") + b"X-Pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


@pytest.mark.parametrize(("size", "status"), [(HEAD_LIMIT, 200), (HEAD_LIMIT + 1, 431)])
async def test_head_exactly_at_the_limit_passes_and_one_byte_over_gets_431(tmp_path, size, status):
    async with running_gateway(tmp_path, BASIC) as gw:
        raw = _head_of(size)
        assert len(raw) == size
        code, _, _ = parse_response(await exchange(gw.bound[0][1], raw))
        assert code == status


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def test_an_unended_header_line_gets_431_one_byte_over_the_limit(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        start = GET + b"X-Endless: "
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
        writer.write(start + b"a" * (HEAD_LIMIT - len(start)))  # the whole budget, the line still open
        await writer.drain()
        with pytest.raises(TimeoutError):  # nothing to say yet: the head may still end at the limit
            await asyncio.wait_for(reader.read(1), 0.2)
        loop = asyncio.get_running_loop()
        began = loop.time()
        writer.write(b"a")  # one byte over: answered at once, not at the header timeout
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:60]
        assert loop.time() - began < 1.0


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


async def test_endless_header_lines_are_cut_off_and_memory_stays_flat(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        before = _rss()
        for _ in range(4):  # the attack of the issue: connections each sending a line that never ends
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
            writer.write(GET + b"X-Endless: ")
            sent = 0
            with contextlib.suppress(ConnectionError):  # the gateway closes with our bytes unread: a reset
                while sent < 64 * 1024 * 1024 and not reader.at_eof():
                    writer.write(b"a" * 65536)
                    sent += 65536
                    await asyncio.wait_for(writer.drain(), 5)
            writer.close()
            # what the kernel's socket buffers absorbed before the close, not megabytes of a parser buffer
            assert sent < 16 * 1024 * 1024
        gw.gateway.metrics.flush()
        refused = gw.gateway.metrics.registry.get_sample_value(
            "bastion_decisions_total", {"control": "http", "outcome": "deny", "reason": "header_too_large"})
        assert refused == 4
        assert _rss() - before < 8 * 1024 * 1024, "an unended line must never be buffered"


@pytest.mark.parametrize(("name", "raw", "status"), [
    ("bare_cr_run", b"\r\r\r\r\r" + GET + b"\r\n", 400),
    ("single_bare_cr", b"\r" + GET + b"\r\n", 400),
    ("crlf_empty_lines", b"\r\n\r\n" + GET + b"Connection: close\r\n\r\n", 200),  # RFC 9112 §2.2: tolerated
])
async def test_only_crlf_empty_lines_may_precede_the_request_line(tmp_path, name, raw, status):
    async with running_gateway(tmp_path, BASIC) as gw:
        code, _, _ = parse_response(await exchange(gw.bound[0][1], raw))
        assert code == status


async def test_bare_cr_split_across_segments_is_refused(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.bound[0][1])
        writer.write(b"\r")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(GET + b"\r\n")
        reply = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:60]


CHUNKED = b"POST /shop/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(("name", "body", "status"), [
    ("extension_at_limit", b"3;x=" + b"e" * (HEAD_LIMIT - 6) + b"\r\nabc\r\n0\r\n\r\n", 200),
    ("extension_one_over", b"3;x=" + b"e" * (HEAD_LIMIT - 5) + b"\r\nabc\r\n0\r\n\r\n", 400),
    ("endless_extension", b"3;x=" + b"e" * (4 * HEAD_LIMIT), 400),
    ("trailers_at_limit", b"3\r\nabc\r\n0\r\nX-T: " + b"t" * (HEAD_LIMIT - 9) + b"\r\n\r\n", 200),
    ("trailers_one_over", b"3\r\nabc\r\n0\r\nX-T: " + b"t" * (HEAD_LIMIT - 8) + b"\r\n\r\n", 400),
    ("endless_trailer_line", b"3\r\nabc\r\n0\r\nX-T: " + b"t" * (4 * HEAD_LIMIT), 400),
])
async def test_chunk_lines_and_trailers_are_bounded(tmp_path, name, body, status):
    async with running_gateway(tmp_path, BASIC) as gw:
        code, _, _ = parse_response(await exchange(gw.bound[0][1], CHUNKED + body, timeout=3))
        assert code == status


async def test_large_chunked_and_pipelined_bodies_pass_the_budget(tmp_path):
    async with running_gateway(tmp_path, BASIC) as gw:
        data = b"x" * (200 * 1024)
        body = b"%x\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
        second = b"POST /shop/items HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        reply = await exchange(gw.bound[0][1], CHUNKED.replace(b"Connection: close\r\n", b"") + body + second
                               + _head_of(HEAD_LIMIT), timeout=3)
        assert reply.count(b"HTTP/1.1 200 OK") == 3, reply[:300]
