"""The deny list in the state backend: the same behaviour on memory and on a real Redis, two Redis clients
(two gateways) seeing each other's revocations at once, expiry, listing, lifting, and failing closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from conftest import ROUTE, Clock, make_ctx
from ruamel.yaml import YAML

from bastion.context import Deny
from bastion.pipeline import run
from bastion.stages.base import Services
from bastion.stages.identity import IdentityPolicy, IdentityShared, build, new_api_key
from bastion.stages.identity.config import ConsumerConfig, ProvidersConfig
from bastion.stages.identity.revocation import Revocation, StateRevocationList
from bastion.state import StateUnavailable
from bastion.state.memory import MemoryState
from bastion.state.redis_state import RedisState
from tests.state.redis_server import RedisServer, free_port

Factory = Callable[[], StateRevocationList]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def stores(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Factory]:
    """A factory of deny lists over ONE shared state: the same MemoryState (two workers of one process), or
    one new Redis (or Redis Cluster) client per call (two gateway instances)."""
    if request.param == "memory":
        state = MemoryState()
        yield lambda: StateRevocationList(state, clock)
        return
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        url = cluster.url
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    clients: list[RedisState] = []

    def factory() -> StateRevocationList:
        # these tests are about atomicity across instances, not outages: a timeout well above the 250 ms default,
        # which five new cluster clients discovering their slots at once can exceed on a loaded CI machine
        clients.append(RedisState(url, clock=clock, timeout=2.0))
        return StateRevocationList(clients[-1], clock)

    yield factory
    for client in clients:
        await client.close()


# --- the record, pure ---------------------------------------------------------------------------------------

T = 1_000.0


@pytest.mark.parametrize(("record", "issued_at", "now", "denied"), [
    (Revocation("sub", "a", until=T + 10), None, T, True),
    (Revocation("sub", "a", until=T + 10), T - 100, T + 10, False),  # until is exclusive
    (Revocation("sub", "a", conditional_until=T + 10, issued_before=T), T - 1, T, True),
    (Revocation("sub", "a", conditional_until=T + 10, issued_before=T), T, T, False),  # a new login
    (Revocation("sub", "a", conditional_until=T + 10, issued_before=T), None, T, True),  # unknown iat: deny
    (Revocation("sub", "a", conditional_until=T + 10, issued_before=T), T - 1, T + 11, False),
    (Revocation("sub", "a", until=T + 5, conditional_until=T + 10, issued_before=T), T + 1, T + 1, True),
    (Revocation("sub", "a", until=T + 5, conditional_until=T + 10, issued_before=T), T + 1, T + 6, False),
    (Revocation("sub", "a", until=T + 5, conditional_until=T + 10, issued_before=T), T - 1, T + 6, True),
])
def test_record_denies(record: Revocation, issued_at: float | None, now: float, denied: bool) -> None:
    assert record.denies(issued_at, now) is denied
    assert Revocation.decode(record.kind, record.value, record.encode()) == record


def test_merge_keeps_each_part() -> None:
    admin = Revocation("sub", "a", until=T + 5, changed=1, source="admin")
    caep = Revocation("sub", "a", conditional_until=T + 100, issued_before=T, changed=2, source="ssf:x")
    later = Revocation("sub", "a", conditional_until=T + 200, issued_before=T + 50, changed=3, source="ssf:x")
    shorter = Revocation("sub", "a", until=T + 1, changed=4, source="admin")
    merged = admin.merged(caep).merged(later).merged(shorter)
    assert (merged.until, merged.conditional_until, merged.issued_before) == (T + 5, T + 200, T + 50)
    assert (merged.changed, merged.source) == (4, "admin")


# --- the store, on both backends ----------------------------------------------------------------------------


async def test_revocation_written_by_one_instance_is_seen_by_another(stores: Factory, clock: Clock) -> None:
    gateway_a, gateway_b = stores(), stores()
    assert not await gateway_b.is_revoked("j1", "alice", "web")
    await gateway_a.revoke("jti", "j1", clock.now + 60)
    await gateway_a.revoke("consumer", "web", clock.now + 120)
    assert await gateway_b.is_revoked("j1", "bob", None)  # the very next lookup, no cache in between
    assert await gateway_b.is_revoked(None, "bob", "web")
    assert not await gateway_b.is_revoked("j2", "bob", "api")
    assert await gateway_b.lift("consumer", "web")
    assert not await gateway_a.is_revoked(None, "bob", "web")
    assert not await gateway_a.lift("consumer", "web")


async def test_entries_expire(stores: Factory, clock: Clock) -> None:
    deny = stores()
    await deny.revoke("jti", "j1", clock.now + 10)
    await deny.revoke("sub", "carol", clock.now + 20, issued_before=clock.now)
    assert await deny.is_revoked("j1", None, None)
    clock.now += 15
    assert not await deny.is_revoked("j1", None, None)
    assert await deny.is_revoked(None, "carol", None, issued_at=clock.now - 100)
    assert [r.value for r in await deny.list_revocations()] == ["carol"]
    clock.now += 10
    assert not await deny.is_revoked(None, "carol", None, issued_at=clock.now - 100)
    assert await deny.list_revocations() == []


async def test_subject_issued_before_and_admin_block_do_not_shorten_each_other(stores: Factory,
                                                                                clock: Clock) -> None:
    deny = stores()
    now = clock.now
    await deny.revoke("sub", "alice", now + 3600, issued_before=now, source="ssf:corp")
    assert await deny.is_revoked(None, "alice", None, issued_at=now - 1)
    assert not await deny.is_revoked(None, "alice", None, issued_at=now + 1)  # logged in again
    record = await deny.revoke("sub", "alice", now + 60)  # an administrator blocks alice for a minute
    assert (record.until, record.conditional_until, record.issued_before) == (now + 60, now + 3600, now)
    assert await deny.is_revoked(None, "alice", None, issued_at=now + 1)
    clock.now += 61
    assert not await deny.is_revoked(None, "alice", None, issued_at=now + 1)
    assert await deny.is_revoked(None, "alice", None, issued_at=now - 1)  # the CAEP part still holds
    await deny.revoke("sub", "alice", now + 10, issued_before=now - 500)  # an older, shorter event
    [listed] = await deny.list_revocations()
    assert (listed.conditional_until, listed.issued_before) == (now + 3600, now)


async def test_list_and_lift(stores: Factory, clock: Clock) -> None:
    deny = stores()
    await deny.revoke("jti", "a:b c*d?", clock.now + 60)  # any characters, even glob and separators
    clock.now += 1
    await deny.revoke("sub", "alice", clock.now + 60, source="ssf:corp")
    listed = await stores().list_revocations()
    assert [(r.kind, r.value, r.source) for r in listed] == [("sub", "alice", "ssf:corp"),
                                                              ("jti", "a:b c*d?", "admin")]
    assert listed[0].as_dict()["conditional_until"] is None
    assert await deny.is_revoked("a:b c*d?", None, None)
    assert await deny.lift("jti", "a:b c*d?")
    assert [r.value for r in await deny.list_revocations()] == ["alice"]


@pytest.mark.parametrize(("kind", "value", "until"), [
    ("ip", "x", 1e12), ("jti", "", 1e12), ("jti", "x" * 1025, 1e12), ("sub", "a", float("inf")),
])
async def test_bad_revocations_are_refused(kind: Any, value: str, until: float) -> None:
    with pytest.raises(ValueError):
        await StateRevocationList(MemoryState()).revoke(kind, value, until)


async def test_remember_once_is_atomic_across_instances(stores: Factory, clock: Clock) -> None:
    instances = [stores() for _ in range(5)]
    results = await asyncio.gather(*(s.remember_once("set", "jti-9", clock.now + 60) for s in instances))
    assert sorted(results) == [False, False, False, False, True]
    assert await instances[0].remember_once("set", "jti-10", clock.now + 60)


async def test_memory_store_survives_a_config_reload(clock: Clock) -> None:
    state = MemoryState()
    services = Services(wall_clock=clock, state=state)
    first = IdentityShared(ProvidersConfig(), [], services)
    assert isinstance(first.revocations, StateRevocationList)
    await first.revocations.revoke("consumer", "web", clock.now + 60)
    second = IdentityShared(ProvidersConfig(), [], services)  # the next config load, same process
    assert await second.revocations.is_revoked(None, None, "web")
    other = IdentityShared(ProvidersConfig(), [], Services(wall_clock=clock, state=MemoryState()))
    assert not await other.revocations.is_revoked(None, None, "web")


# --- real Redis: expiry in Redis itself, outage -------------------------------------------------------------


async def test_redis_keys_expire_with_the_revocation(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url)
    deny = StateRevocationList(state)
    await deny.revoke("jti", "short", time.time() + 0.3)
    await deny.revoke("sub", "bob", time.time() + 0.3, issued_before=time.time())
    assert await deny.remember_once("set", "j", time.time() + 0.3)
    assert not await deny.remember_once("set", "j", time.time() + 0.3)
    assert await deny.is_revoked("short", None, None)
    assert len(await deny.list_revocations()) == 2
    await asyncio.sleep(0.45)
    assert not await deny.is_revoked("short", "bob", None)
    assert await deny.remember_once("set", "j", time.time() + 0.3)
    await deny.forget("set", "j")
    client = state._client()
    assert await client.keys("bastion:*") == []  # Redis dropped the keys: nothing to sweep
    await state.close()


async def test_redis_outage_raises_state_unavailable_fast(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, timeout=0.2, retry_interval=0.1)
    deny = StateRevocationList(state)
    await deny.revoke("jti", "j1", time.time() + 60)
    redis_server.stop()
    started = time.monotonic()
    for call in (lambda: deny.is_revoked("j1", None, None), lambda: deny.revoke("jti", "j2", time.time() + 9),
                 deny.list_revocations, lambda: deny.lift("jti", "j1"),
                 lambda: deny.remember_once("set", "x", time.time() + 9)):
        with pytest.raises(StateUnavailable):
            await call()
    assert time.monotonic() - started < 1.5
    await state.close()


async def test_identity_stage_fails_closed_when_the_deny_list_is_unreachable(clock: Clock) -> None:
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    key, line = new_api_key("web")
    credential = YAML(typ="safe").load(line)[0]
    shared = IdentityShared(ProvidersConfig(), [ConsumerConfig(name="web", credentials=[credential])],
                            Services(wall_clock=clock, state=state))
    stage = build(IdentityPolicy(methods=["api_key"]), ROUTE, shared)
    assert stage is not None
    deny = await run((stage,), make_ctx([("x-api-key", key)]))
    # never let through while the deny list is unknown (503 revocation_unavailable once the stage maps it)
    assert isinstance(deny, Deny) and deny.status in (500, 503)
    assert deny.reason in ("stage_error", "revocation_unavailable")
    assert "StateUnavailable" in (deny.log_detail or "") or deny.reason == "revocation_unavailable"
    await state.close()


async def test_memory_seen_marks_expire(clock: Clock) -> None:
    deny = StateRevocationList(MemoryState(), clock)
    assert await deny.remember_once("set", "j", clock.now + 60)
    assert not await deny.remember_once("set", "j", clock.now + 60)
    clock.now += 61
    assert await deny.remember_once("set", "j", clock.now + 60)


async def test_redis_listing_pages_through_scan(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url)
    deny = StateRevocationList(state)
    client = state._client()
    await client.set("bastion:rl:other", "1")  # other keys of the backend are not listed
    until = time.time() + 60
    for start in range(0, 1_200, 20):
        await asyncio.gather(*(deny.revoke("jti", f"j{i}", until) for i in range(start, start + 20)))
    listed = await deny.list_revocations()
    assert len(listed) == 1_200 and {r.value for r in listed} == {f"j{i}" for i in range(1_200)}
    assert len(await deny.list_revocations(limit=700)) == 700
    await state.close()


@pytest.mark.parametrize(("mode", "status"), [("closed", 503), ("open", None)])
async def test_unreachable_deny_list_per_class(clock: Clock, mode: str, status: int | None) -> None:
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    key, line = new_api_key("web")
    consumers = [ConsumerConfig(name="web", credentials=[YAML(typ="safe").load(line)[0]])]
    shared = IdentityShared(ProvidersConfig(), consumers, Services(wall_clock=clock, state=state))
    stage = build(IdentityPolicy(methods=["api_key"], on_revocation_unavailable=mode), ROUTE, shared)
    assert stage is not None
    deny = await run((stage,), make_ctx([("x-api-key", key)]))
    if status is None:
        assert deny is None
    else:
        assert isinstance(deny, Deny) and (deny.status, deny.reason) == (503, "revocation_unavailable")
    await state.close()
