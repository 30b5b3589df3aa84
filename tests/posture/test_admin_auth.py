"""Admin API authentication: admin-provider tokens with a scope, static hashed tokens, client certificates."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bastion.config.admin import AdminAuthConfig
from bastion.demo.idp import IdpServer, start_idp
from bastion.posture.admin_auth import AdminAuth
from bastion.stages.identity.config import JwtProviderConfig

STATIC = "adm_" + "x" * 40


@pytest.fixture
async def idp() -> AsyncIterator[IdpServer]:
    server = await start_idp("127.0.0.1", 0, audience="bastion-admin")
    yield server
    await server.close()


def _der(ca: trustme.CA, name: str) -> bytes:
    pem = ca.issue_cert(name).cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


async def _auth(idp: IdpServer, **cfg: object) -> AdminAuth:
    provider = JwtProviderConfig(name="corp", issuer=idp.issuer, audiences=["bastion-admin"],
                                 jwks_uri=f"{idp.issuer}/jwks.json")
    auth = AdminAuth(AdminAuthConfig(provider="corp", **cfg), [provider])
    await auth.start()
    return auth


async def test_bearer_tokens(idp: IdpServer):
    auth = await _auth(idp, token_sha256=[hashlib.sha256(STATIC.encode()).hexdigest()])
    try:
        cases = [
            (None, 401, "admin_credentials_missing"),
            ("Basic YWRtaW46YWRtaW4=", 401, "admin_credentials_missing"),
            (f"Bearer {idp.mint('ops', ['bastion:admin'])}", 200, ""),
            (f"Bearer {idp.mint('bob', ['orders:read'])}", 403, "admin_scope_missing"),
            (f"Bearer {idp.mint('ops', ['bastion:admin'], aud='api://demo')}", 401, "admin_jwt_bad_audience"),
            ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJvcHMifQ.", 401, "admin_jwt_alg_not_allowed"),
            (f"Bearer {STATIC}", 200, ""),
            (f"Bearer {STATIC}x", 401, "admin_jwt_malformed"),
        ]
        for header, status, reason in cases:
            decision = await auth.check("/policies", header, None)
            assert (decision.status, decision.reason) == (status, reason), header
            assert decision.allow == (status == 200)
        denied = await auth.check("/policies", f"Bearer {idp.mint('bob', ['orders:read'])}", None)
        assert 'error="insufficient_scope", scope="bastion:admin"' in dict(denied.headers)["www-authenticate"]
        assert (await auth.check("/policies", f"Bearer {idp.mint('ops', ['bastion:admin'])}", None)).principal \
            == "corp:ops"
        assert (await auth.check("/healthz", None, None)).allow  # liveness stays open
        assert not (await auth.check("/healthz/../policies", None, None)).allow
    finally:
        await auth.close()


async def test_client_certificates(idp: IdpServer):
    ca = trustme.CA()
    ops, other = _der(ca, "ops.example.com"), _der(ca, "intruder.example.com")
    auth = await _auth(idp, client_certificates=["ops.example.com"])
    assert (await auth.check("/config", None, ops)).principal == "cert:ops.example.com"
    assert (await auth.check("/config", None, other)).status == 401
    await auth.close()

    both = await _auth(idp, client_certificates=["ops.example.com"], require_client_certificate=True)
    token = f"Bearer {idp.mint('ops', ['bastion:admin'])}"
    assert (await both.check("/config", token, None)).reason == "admin_client_certificate_required"
    assert (await both.check("/config", token, other)).status == 403
    assert (await both.check("/config", None, ops)).status == 401  # tokens are configured: both needed
    assert (await both.check("/config", token, ops)).allow
    await both.close()


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="no JWT provider"):
        AdminAuth(AdminAuthConfig(provider="missing"))


def test_a_provider_of_registered_probe_keys_never_authenticates_admin_calls():
    probe = JwtProviderConfig.model_validate({"name": "bastion-probe", "issuer": "urn:bastion:probe",
                                              "audiences": ["a"], "algorithms": ["ES256"], "registered_keys": {}})
    with pytest.raises(ValueError, match="trusts registered probe keys"):
        AdminAuth(AdminAuthConfig(provider="bastion-probe"), [probe])


async def test_nothing_configured_refuses_everything_but_open_paths():
    auth = AdminAuth(AdminAuthConfig())
    assert (await auth.check("/reload", "Bearer anything", None)).status == 401
    assert (await auth.check("/readyz", None, None)).allow
