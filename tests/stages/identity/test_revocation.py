"""The in-memory deny list: each entry holds until its time, subjects optionally only for older tokens."""

from __future__ import annotations

from conftest import Clock

from bastion.stages.identity.revocation import MemoryRevocationList


async def test_entries_expire(clock: Clock) -> None:
    deny = MemoryRevocationList(clock)
    assert not await deny.is_revoked("j1", "alice", "web")
    await deny.revoke("jti", "j1", clock.now + 10)
    await deny.revoke("consumer", "web", clock.now + 20)
    assert await deny.is_revoked("j1", "bob", None)
    assert await deny.is_revoked(None, "bob", "web")
    assert not await deny.is_revoked("j2", "bob", "api")
    clock.now += 15
    assert not await deny.is_revoked("j1", "bob", None)
    assert await deny.is_revoked(None, None, "web")
    clock.now += 10
    assert not await deny.is_revoked(None, None, "web")
    assert len(deny) == 0


async def test_subject_issued_before(clock: Clock) -> None:
    deny = MemoryRevocationList(clock)
    await deny.revoke("sub", "alice", clock.now + 3600, issued_before=clock.now)
    assert await deny.is_revoked(None, "alice", None, issued_at=clock.now - 1)
    assert await deny.is_revoked(None, "alice", None)  # unknown issue time: denied
    assert not await deny.is_revoked(None, "alice", None, issued_at=clock.now + 1)


async def test_prune_bounds_memory(clock: Clock) -> None:
    deny = MemoryRevocationList(clock, max_entries=10)
    for i in range(10):
        await deny.revoke("jti", f"old{i}", clock.now + 1)
    clock.now += 2
    await deny.revoke("jti", "new", clock.now + 100)
    assert len(deny) == 1
