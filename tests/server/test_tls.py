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


async def _status(port: int, path: str, context: ssl.SSLContext) -> int:
    """The answer's status, or 0 when the handshake or the connection is refused (no HTTP answer at all)."""
    try:
        return (await _get(port, path, context))[0]
    except (ssl.SSLError, ConnectionError):
        return 0


def _trusting(pki: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the gateway's certificate authority."""
    client = ssl.create_default_context()
    pki.configure_trust(client)
    return client


async def test_tls_required_refuses_plaintext_and_mtls_needs_a_client_cert(tmp_path, pki):
    async with running_gateway(tmp_path, CONFIG) as gw:
        plain, tls = gw.bound[0][1], gw.bound[1][1]
        client = _trusting(pki)
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
        modern = _trusting(pki)
        _, writer = await asyncio.open_connection("127.0.0.1", tls, ssl=modern, server_hostname="127.0.0.1")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        writer.close()
        weak = _trusting(pki)
        weak.maximum_version = ssl.TLSVersion.TLSv1_2
        weak.set_ciphers("AES256-SHA")  # static RSA key exchange, no forward secrecy
        assert await _status(tls, "/in/x", weak) == 0
        stranger = _trusting(pki)
        trustme.CA().issue_cert("mallory@example.com").configure_cert(stranger)
        # TLS 1.3 reports the refused client certificate after the handshake: no HTTP answer either way
        assert await _status(tls, "/p/x", stranger) == 0


async def test_certificate_is_reloaded_without_restart(tmp_path, pki):
    async with running_gateway(tmp_path, CONFIG) as gw:
        tls = gw.bound[1][1]
        client = _trusting(pki)
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
        assert not ok and "bastion.yaml:8:27: gateway.listeners[1].tls.key: " in message  # at its reference
        assert (await _get(tls, "/in/x", client))[0] == 200  # still serving with the previous certificate


POLICY_CONFIG = """
version: 1
gateway:
  listeners:
    - {address: 127.0.0.1, port: 0, tls: {cert: gw.pem, key: gw.key}}
    - address: 127.0.0.1
      port: 0
      tls: {cert: gw.pem, key: gw.key, min_version: "1.3", session_tickets: false}
    - address: 127.0.0.1
      port: 0
      tls: {cert: gw.pem, key: gw.key, ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384], groups: [secp384r1],
            alpn: [http/1.1]}
  admin: {enabled: false, port: 0}
classes:
  internal: {identity: {required: false}}
apis:
  - {name: inside, owner: a@example.com, class: internal, upstream: "{upstream}", base_path: /in,
     routes: [{name: r, path: /x, methods: [GET]}]}
"""


def _client(pki: trustme.CA, *, max_version: str = "", ciphers: str = "", group: str = "") -> ssl.SSLContext:
    client = _trusting(pki)
    client.set_alpn_protocols(["h2", "http/1.1"])
    if max_version:
        client.maximum_version = ssl.TLSVersion[max_version]
    if ciphers:
        client.set_ciphers(ciphers)
    if group:
        client.set_ecdh_curve(group)
    return client


def _handshake(port: int, pki: trustme.CA, *, client: ssl.SSLContext | None = None,
               session: ssl.SSLSession | None = None,
               **settings: str) -> tuple[str, str, bool, ssl.SSLSession | None, str | None]:
    """One real TLS connection and request: (version, cipher, resumed, session, ALPN); raises if refused."""
    import socket

    client = client or _client(pki, **settings)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            client.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as conn:
        alpn_chosen = conn.selected_alpn_protocol()
        if alpn_chosen != "h2":  # read the answer: TLS 1.3 tickets arrive after the handshake
            conn.sendall(b"GET /in/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            while conn.recv(65536):
                pass
        cipher = conn.cipher()
        return conn.version() or "", cipher[0] if cipher else "", conn.session_reused, conn.session, alpn_chosen


def _refused(port: int, pki: trustme.CA, **kwargs: str) -> bool:
    try:
        _handshake(port, pki, **kwargs)
    except (ssl.SSLError, ConnectionError):
        return True
    return False


async def test_listener_tls_settings_shape_real_handshakes(tmp_path, pki):
    async with running_gateway(tmp_path, POLICY_CONFIG) as gw:
        default, strict, narrow = (port for _, port in gw.bound)
        run = asyncio.to_thread
        # min_version: a TLS 1.2 client is refused where 1.3 is required, served where 1.2 is allowed
        assert await run(_refused, strict, pki, max_version="TLSv1_2")
        assert (await run(_handshake, default, pki, max_version="TLSv1_2"))[0] == "TLSv1.2"
        assert (await run(_handshake, strict, pki))[0] == "TLSv1.3"
        # cipher allowlist: a weak (non forward-secret) suite is refused everywhere, an unlisted AEAD one too
        assert await run(_refused, default, pki, max_version="TLSv1_2", ciphers="AES256-SHA")
        assert await run(_refused, narrow, pki, max_version="TLSv1_2", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
        version, cipher, *_ = await run(_handshake, narrow, pki, max_version="TLSv1_2")
        assert (version, cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
        # one key-exchange group: a client offering only P-256 finds no key share, in 1.3 and 1.2
        assert await run(_refused, narrow, pki, group="prime256v1")
        assert await run(_refused, narrow, pki, group="prime256v1", max_version="TLSv1_2")
        assert not await run(_refused, narrow, pki, group="secp384r1")
        # ALPN: the narrow listener offers only HTTP/1.1; the default one h2 first
        assert (await run(_handshake, narrow, pki))[4] == "http/1.1"
        assert (await run(_handshake, default, pki))[4] == "h2"


# TLS 1.3 resumes only with tickets: none issued, none resumed. TLS 1.2 also resumes by session id from the
# server's cache, which Python's ssl cannot switch off (no SSL_CTX_set_session_cache_mode): measured here, and
# why a class with `session_resumption: false` also needs listeners with `min_version: "1.3"`.
@pytest.mark.parametrize(("max_version", "resumes_without_tickets"), [("TLSv1_3", False), ("TLSv1_2", True)])
async def test_session_tickets_off_resumption_per_version(tmp_path, pki, max_version, resumes_without_tickets):
    config = POLICY_CONFIG.replace('min_version: "1.3", ', "")  # both versions on the no-ticket listener
    async with running_gateway(tmp_path, config) as gw:
        default, no_tickets, _ = (port for _, port in gw.bound)
        for port, resumes in ((default, True), (no_tickets, resumes_without_tickets)):
            client = _client(pki, max_version=max_version)
            client.set_alpn_protocols(["http/1.1"])  # read the answer (and so the TLS 1.3 ticket)
            *_, session, _ = await asyncio.to_thread(_handshake, port, pki, client=client)
            resumed = (await asyncio.to_thread(_handshake, port, pki, client=client, session=session))[2]
            assert resumed is resumes, port
