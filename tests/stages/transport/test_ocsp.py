"""OcspChecker against a real responder: whose signature counts, one round trip per certificate, bounded cache."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.x509 import ocsp

from bastion.stages.transport.ocsp import OcspChecker
from tests.stages.transport.pki import EPOCH, PartnerCa
from tests.stages.transport.responder import ocsp_responder

pytestmark = pytest.mark.asyncio
NOW = EPOCH.timestamp() + 60


def _checker(ca: PartnerCa, responder: str | None = None, cache_size: int = 100) -> OcspChecker:
    return OcspChecker([ca.cert], responder=responder, timeout=2.0, grace=0.0, cache_size=cache_size,
                       wall_clock=lambda: NOW)


@pytest.mark.parametrize(("signer", "state"), [
    ("issuer", "revoked"),
    ("delegated", "revoked"),  # a responder certificate the CA issued for OCSP signing
    ("not-delegated", "unknown"),  # issued by the CA but without id-kp-OCSPSigning
    ("stranger", "unknown"),  # another CA's key: a forged answer
])
async def test_only_the_issuer_or_its_delegated_responder_is_believed(signer, state):
    ca = PartnerCa()
    cert, _ = ca.issue("mallory")
    ca.revoked[cert.serial_number] = EPOCH
    other = PartnerCa("Partner CA")
    responders = {"issuer": None, "delegated": ca.issue("ocsp", ocsp_signing=True),
                  "not-delegated": ca.issue("ocsp"), "stranger": (other.cert, other.key)}

    def answer(request: bytes) -> bytes:
        return ca.ocsp_answer(request, subject=cert, responder=responders[signer])

    async with ocsp_responder(answer) as server:
        status = await _checker(ca, server.url).status(cert)
    assert status.state == state, status.detail


async def test_concurrent_requests_share_one_round_trip_and_the_cache_is_bounded():
    ca = PartnerCa()
    certs = [ca.issue(f"c{i}")[0] for i in range(3)]
    by_serial = {c.serial_number: c for c in certs}

    def answer(request: bytes) -> bytes:
        return ca.ocsp_answer(request, subject=by_serial[ocsp.load_der_ocsp_request(request).serial_number])

    async with ocsp_responder(answer) as server:
        checker = _checker(ca, server.url, cache_size=2)
        states = await asyncio.gather(*(checker.status(certs[0]) for _ in range(20)))
        assert {s.state for s in states} == {"good"} and server.requests == 1
        for cert in certs:  # three certificates through a cache of two: the first is evicted
            await checker.status(cert)
        await checker.status(certs[0])
        assert server.requests == 1 + 2 + 1


async def test_a_certificate_without_responder_or_foreign_issuer_is_unknown():
    ca = PartnerCa()
    cert, _ = ca.issue("no-aia")
    assert (await _checker(ca).status(cert)).state == "unknown"
    foreign, _ = PartnerCa("Other CA").issue("x", "http://127.0.0.1:9/ocsp")
    assert (await _checker(ca).status(foreign)).state == "unknown"
