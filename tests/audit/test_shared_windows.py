"""The shared windows of enumeration and usage anomaly, on a real backend: what the hits say, what the sync sums."""

from __future__ import annotations

from redis.crc import key_slot

from bastion.audit.shared_windows import RateSync, distinct_hits, fired_gate
from bastion.state.memory import MemoryState

T0 = 1_800_000_000.0


async def test_distinct_hits_count_new_ids_once_and_refuse_at_the_threshold():
    state = MemoryState()
    caller = ("subject", "mallory")
    answers = []
    for value in ["a", "b", "a", "c", "b", "d"]:  # 4 distinct ids, threshold 4
        seen, count = await state.hit(distinct_hits(caller, value, threshold=4, window=60), T0)
        answers.append((seen.allowed, count.allowed))
    # a repeat is refused by its first hit (the count says only whether one more would fit); the 4th new id by
    # the second: that is the threshold
    assert answers == [(True, True), (True, True), (False, True), (True, True), (False, False), (True, False)]
    # a repeat after the window is new again
    seen, _ = (await state.hit(distinct_hits(caller, "a", threshold=4, window=60), T0 + 61))
    assert seen.allowed


def test_the_keys_of_one_caller_share_a_cluster_slot():
    hits = distinct_hits(("ip", "203.0.113.9"), "shop/items:42", threshold=30, window=60)
    gate = fired_gate("enumeration", ("ip", "203.0.113.9"), 60)
    assert len({key_slot(h.key.encode()) for h in [*hits, gate]}) == 1


async def test_two_processes_counts_are_summed_and_unsent_ones_kept_apart():
    state = MemoryState()
    totals: list[list[tuple]] = [[], []]
    syncs = [RateSync(state, 60.0, lambda k, i, c, n=n: totals[n].append((k, i, c))) for n in (0, 1)]
    for _ in range(7):
        syncs[0].add(("subject", "reports"), T0)
    for _ in range(5):
        syncs[1].add(("subject", "reports"), T0 + 1)
    syncs[1].add(("ip", "203.0.113.1"), T0 + 1)
    await syncs[0].flush()
    await syncs[1].flush()
    index = int(T0 // 60)
    assert totals[0] == [(("subject", "reports"), index, 7.0)]
    assert sorted(totals[1]) == [(("ip", "203.0.113.1"), index, 1.0), (("subject", "reports"), index, 12.0)]
    syncs[0].add(("subject", "reports"), T0 + 2)
    assert syncs[0].since(("subject", "reports"), index) == 1  # counted here, not sent yet
    for sync in syncs:
        await sync.close()


async def test_a_flood_of_new_callers_is_bounded():
    sync = RateSync(MemoryState(), 60.0, lambda *_: None, max_callers=100)
    for i in range(10_000):
        sync.add(("ip", f"10.0.{i // 256}.{i % 256}"), T0)
    assert len(sync._pending) == 100
    await sync.close()
