"""The Shared Signals receiver: hostile SETs built in the test are refused with the RFC 8935 error code and
revoke nothing; valid CAEP events revoke the subject's older tokens; replays are refused across instances."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import NOW, Clock, JwksServer, Keys, b64, sign
from joserfc.jwk import ECKey
from pydantic import ValidationError

from bastion.stages.base import Services
from bastion.stages.identity import IdentityShared
from bastion.stages.identity.config import JwtProviderConfig, ProvidersConfig, SsfTransmitterConfig
from bastion.stages.identity.revocation import StateRevocationList
from bastion.stages.identity.ssf import SetReceiver
from bastion.state.memory import MemoryState
from bastion.state.redis_state import RedisState
from tests.state.redis_server import RedisServer, free_port

TX = "https://tx.test"
AUD = "https://gateway.test/ssf"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
REVOKED = CAEP + "session-revoked"
CT = "application/secevent+jwt"


def transmitter(server: JwksServer, **overrides: Any) -> SsfTransmitterConfig:
    fields: dict[str, Any] = {"name": "corp-caep", "issuer": TX, "audience": AUD,
                              "jwks_uri": f"{server.url}/jwks.json", "revoke_for": "1h"}
    fields.update(overrides)
    return SsfTransmitterConfig(**fields)


class Sets:
    """Builds SETs: valid by default, any part overridable (None removes a claim or header)."""

    def __init__(self, keys: Keys, now: float = NOW) -> None:
        self.keys = keys
        self.now = now
        self.count = 0

    def claims(self, **overrides: Any) -> dict[str, Any]:
        self.count += 1
        claims: dict[str, Any] = {
            "iss": TX, "aud": AUD, "iat": int(self.now), "jti": f"set-{self.count}",
            "sub_id": {"format": "iss_sub", "iss": "https://idp.test", "sub": "alice"},
            "events": {REVOKED: {"event_timestamp": int(self.now) - 5}},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: Any = None, header: dict[str, Any] | None = None, **claims: Any) -> bytes:
        key = key or self.keys.ec
        hdr: dict[str, Any] = {"alg": "ES256", "typ": "secevent+jwt", "kid": key.kid}
        hdr.update(header or {})
        return sign(key, self.claims(**claims), {k: v for k, v in hdr.items() if v is not None}).encode()


@pytest.fixture
async def tx_server(keys: Keys) -> AsyncIterator[JwksServer]:
    server = await JwksServer(keys.public_jwks(keys.ec)).start()
    yield server
    await server.close()


@pytest.fixture
def sets(keys: Keys) -> Sets:
    return Sets(keys)


@pytest.fixture
async def receiver(tx_server: JwksServer, clock: Clock) -> AsyncIterator[tuple[SetReceiver, StateRevocationList]]:
    store = StateRevocationList(MemoryState(), clock)
    rx = SetReceiver([transmitter(tx_server, subject_issuers=["https://idp.test"])], store, store)
    await rx.start()
    yield rx, store
    await rx.close()


def answer(result: tuple[int, bytes]) -> tuple[int, str | None]:
    status, body = result
    return status, json.loads(body)["err"] if body else None


def _hostile(sets: Sets, keys: Keys) -> list[tuple[str, bytes, str]]:
    attacker = ECKey.generate_key("P-256", parameters={"kid": "attacker"})
    # RFC 8725 §2.1: the transmitter's public key (PEM) as an HMAC secret, made by hand
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "secevent+jwt", "kid": "ec-1"}).encode()) + "."
                     + b64(json.dumps(sets.claims()).encode()))
    mac = hmac.new(keys.ec.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    stripped = sets.token().rsplit(b".", 1)[0] + b"."
    return [
        ("typ JWT", sets.token(header={"typ": "JWT"}), "invalid_request"),
        ("typ missing", sets.token(header={"typ": None}), "invalid_request"),
        ("an access token", sets.token(header={"typ": "at+jwt"}), "invalid_request"),
        ("wrong key, same kid", sets.token(key=keys.other_ec), "invalid_key"),
        ("alg none", sets.token(header={"alg": "none"}), "invalid_key"),
        ("alg NoNe", sets.token(header={"alg": "NoNe"}), "invalid_key"),
        ("stripped signature", stripped, "invalid_key"),
        ("HS256 with the public key", f"{signing_input}.{b64(mac)}".encode(), "invalid_key"),
        ("RS256 not allowed", sets.token(key=keys.rsa, header={"alg": "RS256"}), "invalid_key"),
        ("unknown kid", sets.token(key=attacker), "invalid_key"),
        ("injected jwk", sets.token(key=attacker, header={"kid": "ec-1", "jwk": attacker.as_dict(private=False)}),
         "invalid_key"),
        ("injected jku", sets.token(key=attacker, header={"jku": "https://evil.test/jwks"}), "invalid_key"),
        ("crit", sets.token(header={"crit": ["exp"]}), "invalid_request"),
        ("wrong iss", sets.token(iss="https://evil.test"), "invalid_issuer"),
        ("iss with a slash", sets.token(iss=TX + "/"), "invalid_issuer"),
        ("no iss", sets.token(iss=None), "invalid_issuer"),
        ("wrong aud", sets.token(aud="https://other.test/ssf"), "invalid_audience"),
        ("no aud", sets.token(aud=None), "invalid_audience"),
        ("no iat", sets.token(iat=None), "invalid_request"),
        ("iat in the future", sets.token(iat=int(NOW) + 120), "invalid_request"),
        ("iat too old", sets.token(iat=int(NOW) - 7200), "invalid_request"),
        ("iat a string", sets.token(iat="now"), "invalid_request"),
        ("expired", sets.token(exp=int(NOW) - 60), "invalid_request"),
        ("no jti", sets.token(jti=None), "invalid_request"),
        ("no events", sets.token(events=None), "invalid_request"),
        ("events a list", sets.token(events=[REVOKED]), "invalid_request"),
        ("event not an object", sets.token(events={REVOKED: "alice"}), "invalid_request"),
        ("no subject", sets.token(sub_id=None), "invalid_request"),
        ("subject not an object", sets.token(sub_id="alice"), "invalid_request"),
        ("subject of a foreign issuer", sets.token(sub_id={"format": "iss_sub", "iss": "https://evil.test",
                                                          "sub": "alice"}), "access_denied"),
        ("JWE", b"a.b.c.d.e", "invalid_request"),
        ("not a JWS", b"hello", "invalid_request"),
        ("header not JSON", b64(b"{").encode() + b"." + b64(b"{}").encode() + b".", "invalid_request"),
        ("too large", b"a" * 70_000, "invalid_request"),
    ]


async def test_hostile_sets_are_refused_and_revoke_nothing(receiver: tuple[SetReceiver, StateRevocationList],
                                                           sets: Sets, keys: Keys) -> None:
    rx, store = receiver
    for name, body, err in _hostile(sets, keys):
        assert answer(await rx.handle(body, CT, NOW)) == (400, err), name
    assert await store.list_revocations() == []
    # the right SET with the wrong media type
    assert answer(await rx.handle(sets.token(), "application/json", NOW)) == (400, "invalid_request")
    assert answer(await rx.handle(sets.token(), "application/jwt", NOW)) == (400, "invalid_request")
    assert await store.list_revocations() == []


async def test_session_revoked_denies_older_tokens_of_the_subject(
        receiver: tuple[SetReceiver, StateRevocationList], sets: Sets, clock: Clock) -> None:
    rx, store = receiver
    assert await rx.handle(sets.token(), "application/secevent+jwt; charset=utf-8", NOW) == (202, b"")
    assert await store.is_revoked(None, "alice", None, issued_at=NOW - 6)
    assert not await store.is_revoked(None, "alice", None, issued_at=NOW - 5)  # issued at the event time
    assert not await store.is_revoked(None, "bob", None, issued_at=NOW - 6)
    [entry] = await store.list_revocations()
    assert (entry.kind, entry.value, entry.source) == ("sub", "alice", "ssf:corp-caep")
    assert (entry.issued_before, entry.conditional_until, entry.until) == (NOW - 5, NOW + 3600, None)
    clock.now += 3601
    assert not await store.is_revoked(None, "alice", None, issued_at=NOW - 6)


async def test_replayed_set_is_refused(receiver: tuple[SetReceiver, StateRevocationList], sets: Sets) -> None:
    rx, _ = receiver
    body = sets.token()
    assert await rx.handle(body, CT, NOW) == (202, b"")
    assert answer(await rx.handle(body, CT, NOW + 1)) == (400, "invalid_request")
    again = sets.token(jti="set-1")  # a new signature, the same jti
    assert answer(await rx.handle(again, CT, NOW + 1)) == (400, "invalid_request")


@pytest.mark.parametrize(("claims", "revoked"), [
    ({"sub_id": {"format": "opaque", "id": "u-42"}}, ["u-42"]),
    ({"sub_id": {"format": "aliases", "identifiers": [{"format": "email", "email": "a@example.com"},
                                                      {"format": "iss_sub", "iss": "https://idp.test",
                                                       "sub": "alice"}]}}, ["alice"]),
    ({"sub_id": {"format": "complex", "user": {"format": "opaque", "id": "u-7"},
                 "session": {"format": "opaque", "id": "s-1"}}}, ["u-7"]),
    ({"sub_id": None, "sub": "carol"}, ["carol"]),  # RFC 8417 top-level sub
    ({"sub_id": None, "events": {REVOKED: {"subject": {"subject_type": "iss_sub", "iss": "https://idp.test",
                                                       "sub": "dave"}, "event_timestamp": int(NOW)}}},
     ["dave"]),  # CAEP drafts: the subject inside the event
    ({"events": {CAEP + "credential-change": {"credential_type": "password", "change_type": "update"}}},
     ["alice"]),
    ({"events": {"https://schemas.openid.net/secevent/risc/event-type/sessions-revoked": {}}}, ["alice"]),
    ({"sub_id": {"format": "email", "email": "a@example.com"}}, []),  # not a token subject: accepted, no-op
    ({"sub_id": {"format": "complex", "session": {"format": "opaque", "id": "s-1"}}}, []),
    ({"events": {CAEP + "token-claims-change": {"claims": {"role": "ro"}}}}, []),  # not revoking
])
async def test_subject_formats_and_event_types(receiver: tuple[SetReceiver, StateRevocationList], sets: Sets,
                                               claims: dict[str, Any], revoked: list[str]) -> None:
    rx, store = receiver
    assert await rx.handle(sets.token(**claims), CT, NOW) == (202, b"")
    assert sorted(r.value for r in await store.list_revocations()) == revoked


async def test_event_time_is_never_later_than_now(receiver: tuple[SetReceiver, StateRevocationList],
                                                  sets: Sets) -> None:
    rx, store = receiver
    body = sets.token(events={REVOKED: {"event_timestamp": int(NOW) + 86400}})  # would lock alice out a day
    assert await rx.handle(body, CT, NOW) == (202, b"")
    assert not await store.is_revoked(None, "alice", None, issued_at=NOW + 1)
    assert await store.is_revoked(None, "alice", None, issued_at=NOW - 1)


async def test_authorization_header(tx_server: JwksServer, sets: Sets, clock: Clock,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSF_PUSH_AUTH", "Bearer s3cret")
    store = StateRevocationList(MemoryState(), clock)
    rx = SetReceiver([transmitter(tx_server, authorization_env="SSF_PUSH_AUTH")], store, store)
    assert answer(await rx.handle(sets.token(), CT, NOW)) == (401, "authentication_failed")
    assert answer(await rx.handle(sets.token(), CT, NOW, authorization="Bearer wrong")) == (
        401, "authentication_failed")
    assert await rx.handle(sets.token(), CT, NOW, authorization="Bearer s3cret") == (202, b"")
    await rx.close()
    monkeypatch.delenv("SSF_PUSH_AUTH")
    with pytest.raises(ValueError, match="SSF_PUSH_AUTH"):
        SetReceiver([transmitter(tx_server, authorization_env="SSF_PUSH_AUTH")], store, store)


async def test_unavailable_keys_or_state_answer_503_so_the_transmitter_retries(
        tx_server: JwksServer, sets: Sets, clock: Clock) -> None:
    store = StateRevocationList(MemoryState(), clock)
    tx_server.status = 500  # the transmitter's JWKS never loads
    rx = SetReceiver([transmitter(tx_server)], store, store)
    await rx.start()
    assert answer(await rx.handle(sets.token(), CT, NOW)) == (503, "temporarily_unavailable")
    await rx.close()
    tx_server.status = 200
    down = StateRevocationList(RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1), clock)
    rx = SetReceiver([transmitter(tx_server)], down, down)
    await rx.start()
    assert answer(await rx.handle(sets.token(), CT, NOW)) == (503, "temporarily_unavailable")
    await rx.close()
    await down.state.close()


async def test_replay_is_refused_by_another_gateway_instance(tx_server: JwksServer, sets: Sets,
                                                             redis_server: RedisServer) -> None:
    now = time.time()
    sets.now = now
    receivers = []
    for _ in range(2):  # two gateways, two Redis clients, one Redis
        store = StateRevocationList(RedisState(redis_server.url))
        receivers.append((SetReceiver([transmitter(tx_server)], store, store), store))
    body = sets.token()
    assert await receivers[0][0].handle(body, CT, now) == (202, b"")
    assert answer(await receivers[1][0].handle(body, CT, now)) == (400, "invalid_request")
    assert await receivers[1][1].is_revoked(None, "alice", None, issued_at=now - 60)
    for rx, store in receivers:
        await rx.close()
        await store.state.close()


async def test_identity_shared_exposes_the_receiver(tx_server: JwksServer, clock: Clock) -> None:
    jwt = JwtProviderConfig(name="corp", issuer="https://idp.test", audiences=["api://x"],
                            jwks_uri=f"{tx_server.url}/jwks.json", max_lifetime="2h")
    ssf = transmitter(tx_server, revoke_for=None)
    shared = IdentityShared(ProvidersConfig(jwt=[jwt], ssf=[ssf]), [], Services(wall_clock=clock))
    assert shared.ssf_receiver is not None
    assert shared.ssf_receiver.transmitters[TX].revoke_for == 7200 + 30  # longest lifetime plus leeway
    assert IdentityShared(ProvidersConfig(jwt=[jwt]), [], Services()).ssf_receiver is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"jwks_uri": None}, "set one of jwks_uri, jwks_file"),
    ({"jwks_file": "keys.json"}, "set one of jwks_uri, jwks_file"),
    ({"jwks_uri": "http://tx.example.com/jwks"}, "must use https"),
    ({"algorithms": ["HS256"]}, "HS\\* algorithms need a local jwks_file"),
    ({"algorithms": ["none"]}, "algorithms"),
    ({"audience": []}, "audience"),
])
def test_config_is_strict(fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"name": "tx", "issuer": TX, "audience": AUD, "jwks_uri": "https://tx.test/jwks"}
    base.update(fields)
    with pytest.raises(ValidationError, match=message):
        SsfTransmitterConfig(**base)


def test_provider_names_and_transmitter_issuers_are_unique() -> None:
    tx = {"name": "corp", "issuer": TX, "audience": AUD, "jwks_uri": "https://tx.test/jwks"}
    jwt = {"name": "corp", "issuer": "https://idp.test", "audiences": ["a"], "jwks_uri": "https://idp.test/j"}
    with pytest.raises(ValidationError, match="provider names must be unique"):
        ProvidersConfig(jwt=[jwt], ssf=[tx])
    with pytest.raises(ValidationError, match="share the issuer"):
        ProvidersConfig(ssf=[tx, {**tx, "name": "other"}])


async def test_set_one_byte_over_max_bytes_is_refused(receiver: tuple[SetReceiver, StateRevocationList],
                                                     sets: Sets) -> None:
    rx, store = receiver
    token = sets.token()
    over = token + b" " * (rx.max_bytes + 1 - len(token))  # trailing whitespace, stripped once within the limit
    assert answer(await rx.handle(over, CT, NOW)) == (400, "invalid_request")
    assert await store.list_revocations() == []
    assert await rx.handle(over[:-1], CT, NOW) == (202, b"")  # exactly max_bytes: taken
    assert [e.value for e in await store.list_revocations()] == ["alice"]
