"""Upstream connections: verified TLS (own CA, client certificates) and no SSRF through DNS names."""

from __future__ import annotations

import asyncio
import json
import ssl
import textwrap

import pytest
import trustme

from bastion.demo.upstream import _echo
from bastion.server.app import Runtime
from bastion.server.http1 import Http1Connection, ServerLimits
from bastion.server.upstream import internal_address
from tests.helpers import FILE_AUDIT_GATEWAY_FORMAT, request

CONFIG = FILE_AUDIT_GATEWAY_FORMAT + """
{limits}
classes:
  open: {{identity: {{required: false, methods: []}}, input: {{contract: "off", inspection: "off"}}}}
apis:
  - name: inner
    owner: o@example.com
    class: open
    upstream: {upstream}
{extra}
    routes: [{{name: r, path: /r, methods: [GET]}}]
"""


async def _tls_upstream(context: ssl.SSLContext | None) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Http1Connection(_echo, ServerLimits(), set()), "127.0.0.1", 0,
                                    ssl=context)


async def _gateway_status(tmp_path, upstream: str, extra: str = "", limits: str = "") -> tuple[int, dict]:
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(upstream=upstream, extra=extra, limits=limits)))
    runtime = Runtime(path)
    await runtime.start()
    try:
        status, _, body = await request(runtime.bound[0][1], "GET", "/r")
    finally:
        await runtime.stop(drain_timeout=0.5)
    return status, json.loads(body)


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server = ca.issue_cert("upstream.internal", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    client = ca.issue_cert("bastion-gateway")
    client.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
    client.private_key_pem.write_to_path(tmp_path / "gw.key")
    return ca, context


async def test_tls_upstream_is_verified_against_the_configured_ca(tmp_path, pki):
    ca, context = pki
    server = await _tls_upstream(context)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"https://127.0.0.1:{port}"
        status, doc = await _gateway_status(tmp_path, url)
        assert status == 502  # the system CAs do not know this upstream: refused, never "insecure"
        assert "127.0.0.1" not in json.dumps(doc)
        status, doc = await _gateway_status(tmp_path, url, "    upstream_tls: {ca: ca.pem}")
        assert status == 200 and doc["service"] == "demo-upstream"
        wrong_name = "    upstream_tls: {ca: ca.pem, server_name: other.internal}"
        assert (await _gateway_status(tmp_path, url, wrong_name))[0] == 502
    finally:
        server.close()


async def test_upstream_mtls_presents_the_gateway_certificate(tmp_path, pki):
    ca, context = pki
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    server = await _tls_upstream(context)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"https://127.0.0.1:{port}"
        assert (await _gateway_status(tmp_path, url, "    upstream_tls: {ca: ca.pem}"))[0] == 502
        extra = "    upstream_tls: {ca: ca.pem, client_cert: gw.pem, client_key: gw.key}"
        assert (await _gateway_status(tmp_path, url, extra))[0] == 200
    finally:
        server.close()


@pytest.mark.parametrize("reference", ["{env: BASTION_TEST_GW_KEY}", "{file: gw-key-secret.pem}"])
async def test_upstream_mtls_key_by_reference(tmp_path, pki, monkeypatch, reference):
    """The upstream client key as a secret reference (issue 19): the handshake works, the value never shows."""
    ca, context = pki
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    key = (tmp_path / "gw.key").read_text()
    (tmp_path / "gw.key").unlink()  # only the reference can supply it now
    monkeypatch.setenv("BASTION_TEST_GW_KEY", key)
    (tmp_path / "gw-key-secret.pem").write_text(key)
    server = await _tls_upstream(context)
    port = server.sockets[0].getsockname()[1]
    try:
        extra = f"    upstream_tls: {{ca: ca.pem, client_cert: gw.pem, client_key: {reference}}}"
        status, doc = await _gateway_status(tmp_path, f"https://127.0.0.1:{port}", extra)
        assert status == 200 and doc["service"] == "demo-upstream"
        audit = (tmp_path / "audit.jsonl").read_text() if (tmp_path / "audit.jsonl").exists() else ""
        assert "PRIVATE KEY" not in audit
    finally:
        server.close()


async def test_a_name_resolving_inside_is_refused_unless_allowed(tmp_path):
    server = await _tls_upstream(None)
    port = server.sockets[0].getsockname()[1]
    try:
        status, _ = await _gateway_status(tmp_path, f"http://localhost:{port}")
        assert status == 502
        events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert any(e.get("unmapped", {}).get("bastion", {}).get("reason") == "upstream_internal_address"
                   for e in events)
        allowed = await _gateway_status(tmp_path, f"http://localhost:{port}", "    allow_private_upstream: true")
        assert allowed[0] == 200
        assert (await _gateway_status(tmp_path, f"http://127.0.0.1:{port}"))[0] == 200  # a literal is explicit
    finally:
        server.close()


@pytest.mark.parametrize(("address", "internal"), [
    ("10.1.2.3", True), ("192.168.0.1", True), ("127.0.0.1", True), ("169.254.169.254", True),
    ("::1", True), ("fe80::1", True), ("::ffff:10.0.0.1", True), ("fd00:ec2::254", True), ("0.0.0.0", True),
    ("93.184.216.34", False), ("2606:4700:4700::1111", False),
])
def test_internal_address(address, internal):
    assert internal_address(address) is internal


def test_missing_tls_files_are_config_errors(tmp_path):
    from bastion.compile import compile_config
    from bastion.config.loader import ConfigError, load_config

    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(upstream="https://upstream.internal", limits="",
                                                  extra="    upstream_tls: {ca: nowhere.pem}")))
    with pytest.raises(ConfigError) as info:
        compile_config(load_config(path))
    assert "apis[0].upstream_tls.ca: no such file" in str(info.value)


async def _hostile_upstream(head: bytes, endless: bool) -> asyncio.base_events.Server:
    """Answers every request with `head`, then (if `endless`) a header line that never ends."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        try:
            while endless:
                writer.write(b"a" * 65536)
                await writer.drain()
            await writer.drain()
            await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _padded_head(size: int) -> bytes:
    """A response head of exactly `size` bytes, its empty line included, then a 2-byte body."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: " + b"a" * (size - 47) + b"\r\n\r\n{}"


@pytest.mark.parametrize(("name", "head", "endless", "limit", "status"), [
    ("endless_line", b"HTTP/1.1 200 OK\r\nX-Endless: ", True, None, 502),
    ("head_one_over", _padded_head(64 * 1024 + 1), False, None, 502),
    ("head_at_limit", _padded_head(64 * 1024), False, None, 200),
    ("configured_one_over", _padded_head(1025), False, 1024, 502),
    ("configured_at_limit", _padded_head(1024), False, 1024, 200),
    ("configured_above_the_default", _padded_head(100_000), False, 100_000, 200),
])
async def test_upstream_response_heads_are_bounded_where_they_arrive(tmp_path, name, head, endless, limit, status):
    upstream = await _hostile_upstream(head, endless)
    limits = f"  limits: {{max_upstream_head_bytes: {limit}}}" if limit else ""
    try:
        port = upstream.sockets[0].getsockname()[1]
        code, _ = await _gateway_status(tmp_path, f"http://127.0.0.1:{port}", "    allow_private_upstream: true",
                                        limits)
    finally:
        upstream.close()
    assert code == status
    if status == 502:
        events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert any("upstream_head_too_large" in json.dumps(event) for event in events)
