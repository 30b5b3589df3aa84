"""Registered probe keys: the kid spells the key, registrations expire by themselves in the state backend, and
a verified token is never trusted (nor cached) past its key's registration. Clocks are injected."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey

from bastion.posture.tokens import TokenForge
from bastion.stages.identity.config import JwtProviderConfig, RegisteredKeysConfig
from bastion.stages.identity.jwt import JwtVerifier, ProviderVerifier, TokenRejected
from bastion.stages.identity.registered import KID_PREFIX, RegisteredKeys, key_from_kid, kid_for, public_key
from bastion.state.memory import MemoryState

T0 = 1_900_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"alg": "ES256"}, private=True)


def test_the_kid_is_the_public_key() -> None:
    key = _key()
    kid = kid_for(key)
    back = key_from_kid(kid)
    assert back is not None and back.as_dict(private=False)["x"] == key.as_dict(private=False)["x"]
    x, y = kid[len(KID_PREFIX):].split(".")
    for bad in ("", "probe-1", f"{KID_PREFIX}{x}", f"{KID_PREFIX}{x}.{y}x", f"{KID_PREFIX}{y}.{x}",
                f"{KID_PREFIX}{'!' * 43}.{y}"):
        assert key_from_kid(bad) is None, bad


@pytest.mark.parametrize(("doc", "why"), [
    ("not a dict", "EC P-256"),
    ({"kty": "RSA", "n": "x", "e": "AQAB"}, "EC P-256"),
    ({"kty": "EC", "crv": "P-384", "x": "x", "y": "y"}, "EC P-256"),
    ({"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}, "not a P-256 public key"),
])
def test_public_key_refuses_what_is_not_a_public_p256_key(doc: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        public_key(doc)


def test_public_key_refuses_the_private_half() -> None:
    with pytest.raises(ValueError, match="private"):
        public_key(_key().as_dict(private=True))


def test_provider_with_registered_keys_is_es256_only() -> None:
    base = {"name": "p", "issuer": "urn:bastion:probe", "audiences": ["a"], "registered_keys": {}}
    assert JwtProviderConfig.model_validate({**base, "algorithms": ["ES256"]}).registered_keys is not None
    with pytest.raises(ValueError, match="must be \\[ES256\\]"):
        JwtProviderConfig.model_validate({**base, "algorithms": ["ES256", "RS256"]})
    with pytest.raises(ValueError, match="set one of"):
        JwtProviderConfig.model_validate({**base, "algorithms": ["ES256"], "jwks_file": "x.json"})


async def test_registration_expires_and_tokens_do_not_outlive_it() -> None:
    clock = Clock()
    state = MemoryState(clock=clock)
    provider = JwtProviderConfig.model_validate({"name": "bastion-probe", "issuer": "urn:bastion:probe",
                                                 "audiences": ["api://demo"], "algorithms": ["ES256"],
                                                 "registered_keys": {"max_ttl": "60s"}})
    assert provider.registered_keys == RegisteredKeysConfig(max_ttl=60.0)
    keys = RegisteredKeys(provider.name, provider.registered_keys, state)
    verifier = JwtVerifier([ProviderVerifier(provider, keys)], clock)
    key = _key()
    signing = ECKey.import_key(key.as_dict(private=True), parameters={"kid": kid_for(key), "alg": "ES256"})
    forge = TokenForge(provider.issuer, "api://demo", signing, clock=clock)
    token = forge.valid()  # exp: 300 s from now, longer than the registration below
    with pytest.raises(TokenRejected) as refused:
        await verifier.verify(token)
    assert refused.value.reason == "jwt_unknown_kid"  # not registered
    for ttl in (0.0, -1.0, 61.0, float("nan")):
        with pytest.raises(ValueError, match="ttl_seconds"):
            await keys.register(key, ttl, clock())
    registration = await keys.register(key, 30.0, clock())
    assert (registration.kid, registration.expires) == (kid_for(key), T0 + 30)
    verified = await verifier.verify(token)
    assert verified.subject == "bastion-probe" and verified.expires == T0 + 30  # cached no longer than the key
    other = ECKey.import_key(_key().as_dict(private=True), parameters={"kid": kid_for(key), "alg": "ES256"})
    with pytest.raises(TokenRejected) as refused:  # the registered kid, signed by another key
        await verifier.verify(TokenForge(provider.issuer, "api://demo", other, clock=clock).valid())
    assert refused.value.reason == "jwt_bad_signature"
    clock.now = T0 + 30.5
    with pytest.raises(TokenRejected) as refused:
        await verifier.verify(token)
    assert refused.value.reason == "jwt_unknown_kid"  # expired by itself: nobody removed it
    assert keys.snapshot()["ready"] and not keys.remote
