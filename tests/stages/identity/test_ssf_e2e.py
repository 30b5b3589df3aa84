"""End to end, in process: two gateways on one real Redis, tokens from the demo IdP. A CAEP session-revoked SET
pushed to one gateway denies the subject's older token on both from the next request on; a token issued after
the event still works."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from joserfc import jwt

from bastion.demo.idp import IdpServer, start_idp
from bastion.server.app import Runtime
from bastion.stages.identity import IdentityShared
from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway
from tests.state.redis_server import RedisServer

RECEIVER = "https://gateway.test/ssf"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"

CONFIG = LOOPBACK_GATEWAY + """
  state: STATE
providers:
  jwt:
    - {name: demo, issuer: "ISSUER", audiences: [api://demo], algorithms: [ES256], jwks_uri: "ISSUER/jwks.json"}
  ssf:
    - name: demo-caep
      issuer: "ISSUER"
      audience: RECEIVER
      algorithms: [ES256]
      jwks_uri: "ISSUER/jwks.json"
classes:
  public:
    identity: {required: true, methods: [jwt]}
apis:
  - name: shop
    owner: team-shop@example.com
    class: public
    upstream: {upstream}
    base_path: /shop
    routes:
      - {name: list-items, path: /items, methods: [GET]}
"""


@pytest.fixture
async def idp() -> AsyncIterator[IdpServer]:
    server = await start_idp("127.0.0.1", 0)
    yield server
    await server.close()


def identity_of(runtime: Runtime) -> IdentityShared:
    assert runtime.gateway is not None
    shared = runtime.gateway.compiled.shared.identity
    assert isinstance(shared, IdentityShared)
    return shared


def session_revoked(idp: IdpServer, sub: str, event_time: int, jti: str) -> bytes:
    """What an IdP's CAEP transmitter pushes: a SET signed with its key, typ secevent+jwt."""
    claims = {"iss": idp.issuer, "aud": RECEIVER, "iat": int(time.time()), "jti": jti,
              "sub_id": {"format": "iss_sub", "iss": idp.issuer, "sub": sub},
              "events": {SESSION_REVOKED: {"event_timestamp": event_time, "initiating_entity": "policy"}}}
    header = {"alg": "ES256", "typ": "secevent+jwt", "kid": idp.es256.kid}
    return jwt.encode(header, claims, idp.es256, algorithms=["ES256"]).encode()


async def status_of(runtime: Runtime, token: str) -> int:
    status, _, _ = await request(runtime.bound[0][1], "GET", "/shop/items", {"authorization": f"Bearer {token}"})
    return status


def revoked_count(runtime: Runtime) -> float:
    runtime.metrics.flush()  # decisions are batched on the request path, as before a scrape
    value = runtime.metrics.registry.get_sample_value(
        "bastion_decisions_total", {"control": "identity", "outcome": "deny", "reason": "credential_revoked"})
    return value or 0.0


async def test_session_revoked_set_denies_the_token_on_every_gateway(
        tmp_path: Path, idp: IdpServer, redis_server: RedisServer) -> None:
    config = CONFIG.replace("ISSUER", idp.issuer).replace("RECEIVER", RECEIVER).replace("STATE", redis_server.url)
    async with AsyncExitStack() as stack:
        gateways = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            gateways.append(await stack.enter_async_context(running_gateway(tmp_path / name, config)))
        a, b = gateways
        now = int(time.time())
        old = idp.mint("alice", ["orders:read"], iat=now - 30)  # alice's current session
        bob = idp.mint("bob", ["orders:read"], iat=now - 30)
        assert [await status_of(g, old) for g in gateways] == [200, 200]

        receiver = identity_of(a).ssf_receiver
        assert receiver is not None
        body = session_revoked(idp, "alice", now - 1, "caep-1")
        assert await receiver.handle(body, "application/secevent+jwt", time.time()) == (202, b"")

        # the next request, on the gateway that received the event and on the other one
        assert [await status_of(g, old) for g in gateways] == [401, 401]
        assert revoked_count(a) == 1 and revoked_count(b) == 1
        _, headers, _ = await request(b.bound[0][1], "GET", "/shop/items", {"authorization": f"Bearer {old}"})
        assert headers["www-authenticate"] == 'Bearer realm="bastion", error="invalid_token"'
        assert [await status_of(g, bob) for g in gateways] == [200, 200]  # other subjects are untouched

        fresh = idp.mint("alice", ["orders:read"])  # alice logs in again after the event
        assert [await status_of(g, fresh) for g in gateways] == [200, 200]

        # the same SET pushed again (to either gateway) is a replay
        other = identity_of(b).ssf_receiver
        assert other is not None
        status, _ = await other.handle(body, "application/secevent+jwt", time.time())
        assert status == 400
        [entry] = await identity_of(b).revocation_store.list_revocations()
        assert (entry.kind, entry.value, entry.source) == ("sub", "alice", "ssf:demo-caep")


ASSURANCE = "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change"


@pytest.mark.parametrize(("extra", "challenge"), [
    # the issuer's own level from the event: the client must reach it again
    ("", 'acr_values="urn:example:mfa"'),
    # or what the operator configured for this transmitter (RFC 9470 acr_values and max_age)
    ("\n      step_up_acr_values: [urn:example:phr]\n      step_up_max_age: 300",
     'acr_values="urn:example:phr", max_age="300"'),
])
async def test_assurance_drop_answers_an_rfc9470_step_up_challenge(tmp_path: Path, idp: IdpServer,
                                                                   extra: str, challenge: str) -> None:
    config = (CONFIG.replace('      jwks_uri: "ISSUER/jwks.json"\nclasses', f'      jwks_uri: "ISSUER/jwks.json"{extra}\nclasses')
              .replace("ISSUER", idp.issuer).replace("RECEIVER", RECEIVER).replace("STATE", "memory"))
    async with running_gateway(tmp_path, config) as gw:
        now = int(time.time())
        token = idp.mint("alice", ["orders:read"], iat=now - 30)
        receiver = identity_of(gw).ssf_receiver
        assert receiver is not None
        claims = {"iss": idp.issuer, "aud": RECEIVER, "iat": now, "jti": "caep-step-up",
                  "sub_id": {"format": "iss_sub", "iss": idp.issuer, "sub": "alice"},
                  "events": {ASSURANCE: {"event_timestamp": now - 1, "namespace": "RFC8176",
                                         "previous_level": "urn:example:mfa", "current_level": "urn:example:pwd",
                                         "change_direction": "decrease"}}}
        header = {"alg": "ES256", "typ": "secevent+jwt", "kid": idp.es256.kid}
        body = jwt.encode(header, claims, idp.es256, algorithms=["ES256"]).encode()
        assert await receiver.handle(body, "application/secevent+jwt", time.time()) == (202, b"")
        status, headers, _ = await request(gw.bound[0][1], "GET", "/shop/items", {"authorization": f"Bearer {token}"})
        assert status == 401
        assert headers["www-authenticate"] == (
            'Bearer realm="bastion", error="insufficient_user_authentication", '
            f'error_description="A different authentication level is required", {challenge}')
