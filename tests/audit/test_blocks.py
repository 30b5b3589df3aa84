"""Blocks: checked first, shared between instances through the state backend, listable, liftable, expiring."""

from __future__ import annotations

from bastion.audit.blocks import BlockList
from bastion.context import CONTINUE, Deny, Identity
from bastion.state import open_state
from bastion.state.memory import MemoryState
from tests.audit.helpers import context
from tests.helpers import free_port

T0 = 1_800_000_000.0


async def test_block_placed_on_one_instance_applies_on_another():
    clock = {"now": T0}
    shared = MemoryState(clock=lambda: clock["now"])
    one = BlockList(shared, clock=lambda: clock["now"], shared_cache=1.0)
    two = BlockList(shared, clock=lambda: clock["now"], shared_cache=1.0)
    ctx = context(ip="198.51.100.9", start=T0)
    assert await two.check(ctx) is CONTINUE  # looked up in the shared state: nothing
    await one.block("ip", "198.51.100.9", 60, "operator")
    assert await two.check(ctx) is CONTINUE  # the negative answer is cached for shared_cache seconds
    clock["now"] += 1.5
    decision = await two.check(ctx)
    assert isinstance(decision, Deny) and decision.reason == "blocked"
    assert [b["key"] for b in await two.list_blocks()] == ["198.51.100.9"]
    assert await one.lift("ip", "198.51.100.9") is True
    assert await one.check(ctx) is CONTINUE
    assert await shared.is_blocked("ip", "198.51.100.9") is None


async def test_subject_and_consumer_blocked_on_one_instance_apply_on_another():
    clock = {"now": T0}
    shared = MemoryState(clock=lambda: clock["now"])
    one = BlockList(shared, clock=lambda: clock["now"], shared_cache=1.0)
    two = BlockList(shared, clock=lambda: clock["now"], shared_cache=1.0)
    alice = context(ip="198.51.100.9", identity=Identity(method="jwt", subject="alice", consumer="web-app"), start=T0)
    bob = context(ip="198.51.100.10", identity=Identity(method="jwt", subject="bob", consumer="scraper"), start=T0)
    assert await two.check(alice) is CONTINUE and await two.check(bob) is CONTINUE  # nothing in the shared state
    await one.block("subject", "alice", 60, "operator")
    await one.block("consumer", "scraper", 60, "operator")
    clock["now"] += 1.5  # past the cached negative answers: every known key is asked again
    for ctx in (alice, bob):
        decision = await two.check(ctx)
        assert isinstance(decision, Deny) and decision.reason == "blocked"
    assert sorted((b["kind"], b["key"]) for b in await two.list_blocks()) == [("consumer", "scraper"),
                                                                              ("subject", "alice")]


async def test_subject_and_consumer_blocks_and_expiry():
    clock = {"now": T0}
    blocks = BlockList(clock=lambda: clock["now"])
    blocks.place("subject", "mallory", 10, "enumeration", "finding-1")
    blocks.place("consumer", "scraper-app", 100, "usage_anomaly")
    mallory = context(identity=Identity(method="jwt", subject="mallory", consumer="web-app"))
    app = context(identity=Identity(method="api_key", subject="k1", consumer="scraper-app"))
    denied = await blocks.check(mallory)
    assert isinstance(denied, Deny) and "finding-1" in (denied.log_detail or "")
    assert denied.detail == "Requests from this client are temporarily blocked."  # nothing about why
    assert isinstance(await blocks.check(app), Deny)
    assert blocks.is_blocked("203.0.113.1", "alice", "web-app") is None
    clock["now"] += 11  # blocks expire by themselves
    assert await blocks.check(mallory) is CONTINUE
    assert [(b["kind"], b["key"]) for b in await blocks.list_blocks()] == [("consumer", "scraper-app")]
    assert blocks.place("ip", "x", 5, "t") is not None
    blocks.max_blocks = 2
    assert blocks.place("ip", "y", 5, "t") is None  # at most max_blocks in force


async def test_unreachable_shared_state_fails_open_and_local_blocks_hold(capsys):
    state = open_state(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    blocks = BlockList(state, clock=lambda: T0)
    try:
        assert await blocks.check(context(ip="203.0.113.5")) is CONTINUE
        blocks.place("ip", "203.0.113.6", 60, "credential_stuffing")
        assert isinstance(await blocks.check(context(ip="203.0.113.6")), Deny)
        await blocks.close()
        assert "shared blocks unavailable" in capsys.readouterr().err
    finally:
        await state.close()
