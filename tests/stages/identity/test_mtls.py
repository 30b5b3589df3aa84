"""Client certificates (made by trustme) mapped to consumers, and RFC 8705 certificate-bound tokens."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import trustme
from conftest import AUDIENCE, ISSUER, Clock, JwksServer, Minter, make_ctx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build
from bastion.stages.identity.config import ConsumerConfig, JwtProviderConfig, ProvidersConfig
from bastion.stages.identity.mtls import thumbprint


def der_of(cert: trustme.LeafCert) -> bytes:
    pem = cert.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def certs() -> dict[str, bytes]:
    ca = trustme.CA()
    return {
        "billing": der_of(ca.issue_cert("billing.example.com")),
        "partner": der_of(ca.issue_cert("partner.example.com")),
        "stranger": der_of(ca.issue_cert("stranger.example.com")),
        "revoked": der_of(ca.issue_cert("revoked.example.com")),
    }


@pytest.fixture
async def shared(jwks_server: JwksServer, clock: Clock, certs: dict[str, bytes]) -> AsyncIterator[IdentityShared]:
    provider = JwtProviderConfig(name="corp", issuer=ISSUER, audiences=[AUDIENCE],
                                 jwks_uri=f"{jwks_server.url}/jwks.json")
    consumers = [
        ConsumerConfig(name="billing", credentials=[{"type": "mtls", "san": "billing.example.com"}]),
        ConsumerConfig(name="partner", credentials=[{"type": "mtls", "x5t_s256": thumbprint(certs["partner"])}]),
        ConsumerConfig(name="old", credentials=[{"type": "mtls", "san": "revoked.example.com", "revoked": True}]),
    ]
    state = IdentityShared(ProvidersConfig(jwt=[provider]), consumers, Services(wall_clock=clock))
    await state.start()
    yield state
    await state.close()


@pytest.mark.parametrize(("who", "status", "reason", "consumer"), [
    ("billing", 200, "", "billing"),
    ("partner", 200, "", "partner"),
    ("stranger", 403, "consumer_unknown", None),
    ("revoked", 401, "credential_revoked", None),
])
async def test_certificate_maps_to_consumer(shared: IdentityShared, route: RouteInfo, certs: dict[str, bytes],
                                            who: str, status: int, reason: str, consumer: str | None) -> None:
    stage = build(IdentityPolicy(methods=["mtls"]), route, shared)
    assert stage is not None
    ctx = make_ctx(peer_cert=certs[who])
    decision = await stage.check(ctx)
    if status == 200:
        assert isinstance(decision, Continue)
        assert ctx.identity is not None and ctx.identity.method == "mtls"
        assert ctx.identity.consumer == consumer and ctx.identity.credential_id == thumbprint(certs[who])
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)


def test_thumbprint_in_hex_is_accepted(certs: dict[str, bytes]) -> None:
    hexprint = ":".join(f"{b:02X}" for b in hashlib.sha256(certs["partner"]).digest())
    cfg = ConsumerConfig(name="p", credentials=[{"type": "mtls", "x5t_s256": hexprint}])
    shared = IdentityShared(ProvidersConfig(), [cfg])
    consumer, _ = shared.consumers.for_certificate(shared.certs.parse(certs["partner"]))
    assert consumer is not None and consumer.name == "p"


@pytest.mark.parametrize(("bound_to", "conn", "policy", "status", "reason"), [
    ("billing", "billing", {}, 200, ""),
    ("billing", "partner", {}, 401, "token_binding_mismatch"),  # mis-bound: another client's cert
    ("billing", None, {}, 401, "token_binding_mismatch"),  # bound token over a connection without a cert
    (None, "billing", {"require_bound_tokens": True}, 401, "token_not_bound"),  # unbound token
    (None, None, {}, 200, ""),
])
async def test_bound_tokens(shared: IdentityShared, route: RouteInfo, minter: Minter, certs: dict[str, bytes],
                            bound_to: str | None, conn: str | None, policy: dict[str, bool], status: int,
                            reason: str) -> None:
    cnf = {"x5t#S256": thumbprint(certs[bound_to])} if bound_to else None
    token = minter.token(cnf=cnf)
    stage = build(IdentityPolicy(methods=["jwt", "mtls"], **policy), route, shared)
    assert stage is not None
    ctx = make_ctx([("authorization", f"Bearer {token}")], peer_cert=certs[conn] if conn else None)
    decision = await stage.check(ctx)
    if status == 200:
        assert isinstance(decision, Continue)
        assert ctx.identity is not None and ctx.identity.method == "jwt"
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)
        assert ('error="invalid_token"' in decision.headers[0][1])
