"""API keys and consumers: generation, hashed storage, constant-time lookup, expiry, revocation."""

from __future__ import annotations

import io
from typing import Any

import pytest
from conftest import Clock, make_ctx
from ruamel.yaml import YAML

from bastion.context import Continue, Deny
from bastion.stages.base import RouteInfo, Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build, new_api_key
from bastion.stages.identity.config import ConsumerConfig, ProvidersConfig, check_consumers
from bastion.stages.identity.consumers import hash_key


def credential(line: str) -> dict[str, Any]:
    """The YAML line printed by `bastion keys new` parses into a credential."""
    loaded = YAML(typ="safe").load(io.StringIO(line))
    return dict(loaded[0])


def test_new_api_key_prints_only_the_hash() -> None:
    key, line = new_api_key("billing")
    cred = credential(line)
    assert key.startswith(f"bsk_{cred['id']}_") and key not in line
    assert cred["key_sha256"] == hash_key(key) and cred["type"] == "api_key"
    assert new_api_key("billing")[0] != key
    with pytest.raises(ValueError):
        new_api_key("bad name\n")


@pytest.fixture
def keyed(clock: Clock) -> tuple[IdentityShared, dict[str, str]]:
    keys = {name: new_api_key("billing") for name in ("good", "expired", "revoked", "disabled", "office")}
    creds = {name: credential(line) for name, (_, line) in keys.items()}
    creds["expired"]["expires"] = "2020-01-01T00:00:00Z"
    creds["revoked"]["revoked"] = True
    consumers = [
        ConsumerConfig(name="billing", roles=["billing"],
                       credentials=[creds["good"], creds["expired"], creds["revoked"]]),
        ConsumerConfig(name="legacy", disabled=True, credentials=[creds["disabled"]]),
        ConsumerConfig(name="office", networks=["10.0.0.0/8"], credentials=[creds["office"]]),
    ]
    shared = IdentityShared(ProvidersConfig(), consumers, Services(wall_clock=clock))
    return shared, {name: key for name, (key, _) in keys.items()}


@pytest.mark.parametrize(("which", "mutate", "status", "reason"), [
    ("good", None, 200, ""),
    ("good", lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), 401, "api_key_invalid"),
    ("good", lambda k: "bsk_ffffffffffff_" + k.split("_", 2)[2], 401, "api_key_invalid"),
    ("good", lambda k: "not-a-key", 401, "api_key_invalid"),
    ("expired", None, 401, "api_key_expired"),
    ("revoked", None, 401, "api_key_revoked"),
    ("disabled", None, 403, "consumer_disabled"),
    ("office", None, 403, "consumer_network_denied"),
])
async def test_api_key_lookup(keyed: tuple[IdentityShared, dict[str, str]], route: RouteInfo, which: str,
                              mutate: Any, status: int, reason: str) -> None:
    shared, keys = keyed
    key = mutate(keys[which]) if mutate else keys[which]
    stage = build(IdentityPolicy(methods=["api_key"]), route, shared)
    assert stage is not None
    ctx = make_ctx([("x-api-key", key)])
    decision = await stage.check(ctx)
    if status == 200:
        assert isinstance(decision, Continue)
        assert ctx.identity is not None and ctx.identity.method == "api_key"
        assert (ctx.identity.consumer, ctx.identity.roles) == ("billing", frozenset({"billing"}))
        assert ctx.identity.credential_id == key.split("_")[1]
        assert ctx.drop_upstream_headers == {"x-api-key"}
    else:
        assert isinstance(decision, Deny) and (decision.status, decision.reason) == (status, reason)
        assert key not in (decision.log_detail or "")


async def test_api_key_in_query_only_when_allowed(keyed: tuple[IdentityShared, dict[str, str]],
                                                  route: RouteInfo) -> None:
    shared, keys = keyed
    strict = build(IdentityPolicy(methods=["api_key"]), route, shared)
    loose = build(IdentityPolicy(methods=["api_key"], allow_query_api_key=True), route, shared)
    assert strict is not None and loose is not None
    denied = await strict.check(make_ctx(query=f"api_key={keys['good']}"))
    assert isinstance(denied, Deny) and (denied.status, denied.reason) == (400, "query_api_key_not_allowed")
    assert isinstance(await loose.check(make_ctx(query=f"api_key={keys['good']}")), Continue)


async def test_custom_header_and_jwt_only_route_ignores_api_keys(keyed: tuple[IdentityShared, dict[str, str]],
                                                                 route: RouteInfo) -> None:
    shared, keys = keyed
    custom = build(IdentityPolicy(methods=["api_key"], api_key_header="x-partner-key"), route, shared)
    assert custom is not None
    assert isinstance(await custom.check(make_ctx([("x-partner-key", keys["good"])])), Continue)
    jwt_only = build(IdentityPolicy(), route, shared)
    assert jwt_only is not None
    decision = await jwt_only.check(make_ctx([("x-api-key", keys["good"])]))
    assert isinstance(decision, Deny) and decision.reason == "jwt_missing"


def test_duplicate_credentials_are_config_errors() -> None:
    _, line = new_api_key("a")
    cred = credential(line)
    errors = check_consumers([ConsumerConfig(name="a", credentials=[cred]),
                              ConsumerConfig(name="b", credentials=[cred]), ConsumerConfig(name="a")])
    assert any("api_key id" in e for e in errors) and any("name a" in e for e in errors)
    with pytest.raises(ValueError):
        IdentityShared(ProvidersConfig(), [ConsumerConfig(name="a"), ConsumerConfig(name="a")])
