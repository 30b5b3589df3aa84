"""Real TLS and mTLS listeners with certificates made by the test (trustme)."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
import trustme

from tests.helpers import parse_response, running_gateway

pytestmark = pytest.mark.asyncio

CONFIG = """
version: 1
gateway:
  listeners:
    - {address: 127.0.0.1, port: 0}
    - address: 127.0.0.1
      port: 0
      tls: {cert: gw.pem, key: gw.key, client_ca: ca.pem, client_cert: optional}
  admin: {enabled: false, port: 0}
classes:
  internal:
    transport: {tls: required}
    identity: {required: false}
  partner:
    transport: {tls: required, mtls: required}
    identity: {required: false}
apis:
  - {name: inside, owner: a@example.com, class: internal, upstream: "{upstream}", base_path: /in,
     routes: [{name: r, path: /x, methods: [GET]}]}
  - {name: partners, owner: b@example.com, class: partner, upstream: "{upstream}", base_path: /p,
     routes: [{name: r, path: /x, methods: [GET]}]}
"""


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
    server.private_key_pem.write_to_path(tmp_path / "gw.key")
    return ca


async def _get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, dict, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="127.0.0.1" if context else None)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return parse_response(data)


async def test_tls_required_refuses_plaintext_and_mtls_needs_a_client_cert(tmp_path, pki):
    async with running_gateway(tmp_path, CONFIG) as gw:
        plain, tls = gw.bound[0][1], gw.bound[1][1]
        client = ssl.create_default_context()
        pki.configure_trust(client)
        status, _, body = await _get(plain, "/in/x", None)
        assert status == 403 and json.loads(body)["detail"] == "This API must be called over HTTPS."
        assert (await _get(tls, "/in/x", client))[0] == 200
        seen = json.loads((await _get(tls, "/in/x", client))[2])["headers"]
        assert seen["x-forwarded-proto"] == "https"
        assert (await _get(tls, "/p/x", client))[0] == 403  # no client certificate
        pki.issue_cert("acme-billing@example.com").configure_cert(client)
        assert (await _get(tls, "/p/x", client))[0] == 200


async def test_listener_prefers_tls13_refuses_weak_ciphers_and_unknown_client_ca(tmp_path, pki):
    async with running_gateway(tmp_path, CONFIG) as gw:
        tls = gw.bound[1][1]
        modern = ssl.create_default_context()
        pki.configure_trust(modern)
        _, writer = await asyncio.open_connection("127.0.0.1", tls, ssl=modern, server_hostname="127.0.0.1")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        writer.close()
        weak = ssl.create_default_context()
        pki.configure_trust(weak)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES256-SHA")  # static RSA key exchange, no forward secrecy
        try:
            status = (await _get(tls, "/in/x", weak))[0]
        except (ssl.SSLError, ConnectionError):
            status = 0
        assert status == 0
        stranger = ssl.create_default_context()
        pki.configure_trust(stranger)
        trustme.CA().issue_cert("mallory@example.com").configure_cert(stranger)
        # TLS 1.3 reports the refused client certificate after the handshake: no HTTP answer either way
        try:
            status = (await _get(tls, "/p/x", stranger))[0]
        except (ssl.SSLError, ConnectionError):
            status = 0
        assert status == 0


async def test_certificate_is_reloaded_without_restart(tmp_path, pki):
    async with running_gateway(tmp_path, CONFIG) as gw:
        tls = gw.bound[1][1]
        client = ssl.create_default_context()
        pki.configure_trust(client)
        _, writer = await asyncio.open_connection("127.0.0.1", tls, ssl=client, server_hostname="127.0.0.1")
        first = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        renewed = pki.issue_cert("127.0.0.1")
        renewed.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
        renewed.private_key_pem.write_to_path(tmp_path / "gw.key")
        ok, _ = await gw.reload("test")
        assert ok
        _, writer = await asyncio.open_connection("127.0.0.1", tls, ssl=client, server_hostname="127.0.0.1")
        second = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        assert first != second
        (tmp_path / "gw.key").write_text("not a key")
        ok, message = await gw.reload("test")
        assert not ok and "TLS certificate" in message
        assert (await _get(tls, "/in/x", client))[0] == 200  # still serving with the previous certificate
