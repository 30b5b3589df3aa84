"""End to end: a revoked client certificate is refused over real mTLS, by a CRL file and by a real OCSP responder."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl

import pytest
import trustme

from bastion.stages.base import Services
from tests.helpers import parse_response, running_gateway
from tests.stages.transport.pki import EPOCH, PartnerCa
from tests.stages.transport.responder import ocsp_responder

pytestmark = pytest.mark.asyncio

CONFIG = """
version: 1
gateway:
  listeners:
    - address: 127.0.0.1
      port: 0
      tls: {cert: gw.pem, key: gw.key, client_ca: ca.pem, client_cert: optional}
  admin: {enabled: false, port: 0}
  audit: {sinks: [{type: file, path: audit.jsonl}]}
  revocation: {issuers: [TMP/ca.pem], crls: CRLS, ocsp: OCSP, reload_interval: 0s, grace: 1h RESPONDER}
classes:
  hard: {transport: {tls: required, mtls: required, revocation: hard}, identity: {required: false}}
  soft: {transport: {tls: required, mtls: required, revocation: soft}, identity: {required: false}}
  unchecked: {transport: {tls: required, mtls: required}, identity: {required: false}}
apis:
  - {name: h, owner: a@example.com, class: hard, upstream: "{upstream}", base_path: /h,
     routes: [{name: r, path: /x, methods: [GET]}]}
  - {name: s, owner: a@example.com, class: soft, upstream: "{upstream}", base_path: /s,
     routes: [{name: r, path: /x, methods: [GET]}]}
  - {name: u, owner: a@example.com, class: unchecked, upstream: "{upstream}", base_path: /u,
     routes: [{name: r, path: /x, methods: [GET]}]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH.timestamp() + 60

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pki(tmp_path):
    server_ca = trustme.CA()
    server = server_ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
    server.private_key_pem.write_to_path(tmp_path / "gw.key")
    ca = PartnerCa()
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    return server_ca, ca


def _config(tmp_path, *, crls: bool, ocsp: bool, responder: str = "") -> str:
    return (CONFIG.replace("TMP", str(tmp_path)).replace("CRLS", f"[{tmp_path}/ca.crl]" if crls else "[]")
            .replace("OCSP", "true" if ocsp else "false")
            .replace(" RESPONDER", f", ocsp_responder: {responder}" if responder else ""))


def _client(tmp_path, server_ca: trustme.CA, ca: PartnerCa, stem: str, cert, key) -> ssl.SSLContext:
    context = ssl.create_default_context()
    server_ca.configure_trust(context)
    context.load_cert_chain(*ca.write_client(tmp_path, stem, cert, key))
    return context


async def _status(port: int, path: str, context: ssl.SSLContext) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return parse_response(data)[0]


def _decisions(tmp_path) -> list[str]:
    return [line for line in (tmp_path / "audit.jsonl").read_text().splitlines() if "/x" in line]


async def test_crl_file_revokes_reloads_and_fails_closed_when_stale(tmp_path, pki):
    server_ca, ca = pki
    alice_cert, alice_key = ca.issue("alice")
    mallory_cert, mallory_key = ca.issue("mallory")
    ca.revoked[mallory_cert.serial_number] = EPOCH
    (tmp_path / "ca.crl").write_bytes(ca.crl())
    alice = _client(tmp_path, server_ca, ca, "alice", alice_cert, alice_key)
    mallory = _client(tmp_path, server_ca, ca, "mallory", mallory_cert, mallory_key)
    clock = Clock()
    async with running_gateway(tmp_path, _config(tmp_path, crls=True, ocsp=False), Services(wall_clock=clock)) as gw:
        port = gw.bound[0][1]
        assert await _status(port, "/h/x", alice) == 200
        assert await _status(port, "/h/x", mallory) == 403
        assert await _status(port, "/u/x", mallory) == 200  # a class that does not check revocation
        # the CA revokes alice too: the CRL file changes and is read again, no reload needed
        ca.revoked[alice_cert.serial_number] = EPOCH
        (tmp_path / "ca.crl").write_bytes(ca.crl(this_update=EPOCH + dt.timedelta(seconds=1)))
        assert await _status(port, "/h/x", alice) == 403
        # a CRL signed by another key is not believed: the previous list stays (and goes stale)
        (tmp_path / "ca.crl").write_bytes(PartnerCa("Partner CA").crl())
        assert await _status(port, "/h/x", alice) == 403
        # past next_update + grace nothing is known: hard refuses, soft lets through (flagged)
        clock.now = (EPOCH + dt.timedelta(days=7, hours=2)).timestamp()
        ca.revoked.clear()
        fresh_client_cert, fresh_key = ca.issue("bob")
        bob = _client(tmp_path, server_ca, ca, "bob", fresh_client_cert, fresh_key)
        assert await _status(port, "/h/x", bob) == 403
        assert await _status(port, "/s/x", bob) == 200
    events = _decisions(tmp_path)
    revoked = [json.loads(e) for e in events if "certificate_revoked" in e]
    assert any(f"serial {mallory_cert.serial_number:x} revoked (crl" in json.dumps(e) for e in revoked)
    assert any("revocation_unknown" in e and "stale" in e for e in events)
    assert any('"outcome": "flag"' in e.replace('":"', '": "') for e in events)


async def test_ocsp_from_the_aia_url_is_verified_cached_and_hard_or_soft_fails(tmp_path, pki):
    server_ca, ca = pki
    known = {}

    def answer(request: bytes) -> bytes:
        from cryptography.x509 import ocsp as x509_ocsp

        serial = x509_ocsp.load_der_ocsp_request(request).serial_number
        return ca.ocsp_answer(request, subject=known.get(serial))

    clock = Clock()
    async with ocsp_responder(answer) as responder:
        alice_cert, alice_key = ca.issue("alice", responder.url)
        mallory_cert, mallory_key = ca.issue("mallory", responder.url)
        known.update({c.serial_number: c for c in (alice_cert, mallory_cert)})
        ca.revoked[mallory_cert.serial_number] = EPOCH
        alice = _client(tmp_path, server_ca, ca, "alice", alice_cert, alice_key)
        mallory = _client(tmp_path, server_ca, ca, "mallory", mallory_cert, mallory_key)
        services = Services(wall_clock=clock)
        async with running_gateway(tmp_path, _config(tmp_path, crls=False, ocsp=True), services) as gw:
            port = gw.bound[0][1]
            assert await _status(port, "/h/x", alice) == 200
            assert await _status(port, "/h/x", alice) == 200
            assert responder.requests == 1  # cached until next_update
            assert await _status(port, "/h/x", mallory) == 403
            # an unknown certificate (the responder is "unauthorized" for it): hard refuses, soft flags
            stranger_cert, stranger_key = ca.issue("stranger", responder.url)
            stranger = _client(tmp_path, server_ca, ca, "stranger", stranger_cert, stranger_key)
            assert await _status(port, "/h/x", stranger) == 403
            assert await _status(port, "/s/x", stranger) == 200
            # past next_update the answer is asked again; the responder now fails: within the grace the kept
            # answer holds, beyond it nothing is known
            responder.answer = lambda request: b"not ocsp"
            clock.now += 3600 + 60
            assert await _status(port, "/h/x", alice) == 200
            clock.now += 3600
            assert await _status(port, "/h/x", alice) == 403
    events = _decisions(tmp_path)
    assert any(f"serial {mallory_cert.serial_number:x} revoked (ocsp" in e for e in events)
