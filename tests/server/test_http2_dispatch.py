"""One listener, two protocols: TLS ALPN "h2" or HTTP/1.1 fallback, and cleartext h2c prior knowledge."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
import uvloop

from bastion.server.dispatch import alpn, protocol_factory
from bastion.server.http1 import ServerLimits
from bastion.server.http2 import H2Connection
from tests.helpers import BASIC, parse_response, running_gateway
from tests.server.test_http2 import RawH2

GET = b"GET /shop/items HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def pki() -> tuple[ssl.SSLContext, trustme.CA]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    alpn(server)
    return server, ca


def client_context(ca: trustme.CA, protocols: list[str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if protocols:
        context.set_alpn_protocols(protocols)
    return context


@asynccontextmanager
async def listener(tmp_path, *, h2c: bool, context: ssl.SSLContext | None = None,
                   limits: ServerLimits | None = None) -> AsyncIterator[tuple[int, set]]:
    async with running_gateway(tmp_path, BASIC) as runtime:
        gateway = runtime.gateway
        registry: set = set()
        factory = protocol_factory(gateway.handle, limits or ServerLimits(), registry, gateway.on_protocol_error,
                                   h2c=h2c)
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=context)
        try:
            yield server.sockets[0].getsockname()[1], registry
        finally:
            server.close()
            for conn in list(registry):
                conn.abort()


async def http1(port: int, context: ssl.SSLContext | None = None, data: bytes = GET) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="127.0.0.1" if context else None)
    if context is not None:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() in (None, "http/1.1")
    writer.write(data)
    raw = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return parse_response(raw)


async def http2(port: int, context: ssl.SSLContext | None = None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="127.0.0.1" if context else None)
    client = RawH2(reader, writer)
    try:
        stream = await client.request("GET", "/shop/items")
        assert json.loads(stream.body)["service"] == "demo-upstream"
        return stream.status
    finally:
        await client.close()


async def test_tls_alpn_h2_serves_http2_and_http1_falls_back(tmp_path, pki):
    server, ca = pki
    async with listener(tmp_path, h2c=False, context=server) as (port, registry):
        assert await http2(port, client_context(ca, ["h2", "http/1.1"])) == 200
        status, _, body = await http1(port, client_context(ca, ["http/1.1"]))
        assert status == 200 and json.loads(body)["service"] == "demo-upstream"
        status, _, _ = await http1(port, client_context(ca, None))  # no ALPN at all: HTTP/1.1
        assert status == 200


async def test_tls_h2_connection_is_an_h2connection_in_the_registry(tmp_path, pki):
    server, ca = pki
    async with listener(tmp_path, h2c=False, context=server) as (port, registry):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca, ["h2"]),
                                                       server_hostname="127.0.0.1")
        client = RawH2(reader, writer)
        assert (await client.request("GET", "/shop/items")).status == 200
        assert [type(c) for c in registry] == [H2Connection]
        await client.close()


async def test_h2c_prior_knowledge_and_http1_share_a_cleartext_listener(tmp_path):
    async with listener(tmp_path, h2c=True) as (port, _):
        assert await http2(port) == 200
        status, _, _ = await http1(port)
        assert status == 200


async def test_h2c_off_treats_the_preface_as_a_bad_http1_request(tmp_path):
    async with listener(tmp_path, h2c=False) as (port, _):
        status, headers, _ = await http1(port, data=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert 400 <= status < 600
        assert headers.get("connection") == "close"


async def test_h2c_silent_client_is_closed_after_the_header_timeout(tmp_path):
    async with listener(tmp_path, h2c=True, limits=ServerLimits(header_timeout=0.2)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(-1), 3) == b""
        writer.close()


async def test_h2c_preface_split_over_several_reads(tmp_path):
    async with listener(tmp_path, h2c=True) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/shop/items"), (":scheme", "http"),
                              (":authority", "gateway.test")], end_stream=True)
        data = conn.data_to_send()
        for piece in (data[:8], data[8:20], data[20:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        status = None
        while status is None:
            for event in conn.receive_data(await asyncio.wait_for(reader.read(65536), 5)):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
        assert status == b"200"
        writer.close()


def test_dispatch_under_uvloop(tmp_path, pki):
    """The gateway runs on uvloop: its transports must hand over (set_protocol) too."""
    server, ca = pki

    async def main() -> None:
        async with listener(tmp_path, h2c=True) as (port, _):
            assert await http2(port) == 200
            assert (await http1(port))[0] == 200
        async with listener(tmp_path, h2c=False, context=server) as (port, _):
            assert await http2(port, client_context(ca, ["h2"])) == 200
            assert (await http1(port, client_context(ca, ["http/1.1"])))[0] == 200

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
