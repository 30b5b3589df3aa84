"""Target choice: weighted round robin, least requests, consistent hashing."""

from __future__ import annotations

import collections

import pytest

from bastion.upstreams.balance import ConsistentHash, LeastRequests, RoundRobin, balancer
from bastion.upstreams.target import TargetState


def pool(*weights: int) -> list[TargetState]:
    return [TargetState(f"10.0.0.{i}:80", weight) for i, weight in enumerate(weights, 1)]


@pytest.mark.parametrize(("weights", "expected"), [
    ((1, 1), "a b a b a b"),
    ((5, 1, 1), "a a b a c a a"),  # smooth: never five a's in a row
    ((2, 1), "a b a a b a"),
])
def test_round_robin_is_smooth_and_weighted(weights: tuple[int, ...], expected: str) -> None:
    targets = pool(*weights)
    letters = {t.name: "abc"[i] for i, t in enumerate(targets)}
    rr = RoundRobin()
    assert " ".join(letters[rr.choose(targets, None).name] for _ in expected.split()) == expected


def test_least_requests_prefers_the_idlest_per_weight() -> None:
    a, b, c = pool(1, 2, 1)
    a.active, b.active, c.active = 3, 4, 1
    lr = LeastRequests()
    assert lr.choose([a, b, c], None) is c  # 1/1 < 4/2 < 3/1
    c.active = 5
    assert lr.choose([a, b, c], None) is b  # 4/2 = 2 is now lowest
    b.active = 6
    a.active = 3
    # tied at 3: alternate, never always the first
    assert {lr.choose([a, b], None).name for _ in range(4)} == {a.name, b.name}


def test_consistent_hash_keeps_keys_and_moves_only_the_lost_targets_keys() -> None:
    targets = pool(1, 1, 1, 1)
    ring = ConsistentHash(targets)
    keys = [f"client-{n}" for n in range(400)]
    before = {k: ring.choose(targets, k) for k in keys}
    assert {k: ring.choose(targets, k) for k in keys} == before  # stable
    assert set(collections.Counter(t.name for t in before.values())) == {t.name for t in targets}
    lost = targets[1]
    left = [t for t in targets if t is not lost]
    after = {k: ring.choose(left, k) for k in keys}
    moved = [k for k in keys if after[k] is not before[k]]
    assert moved and all(before[k] is lost for k in moved)  # only the lost target's keys move


def test_consistent_hash_spreads_by_weight_and_falls_back_without_key() -> None:
    targets = pool(3, 1)
    ring = ConsistentHash(targets)
    counts = collections.Counter(ring.choose(targets, f"k{n}").name for n in range(4000))
    assert 2.0 < counts[targets[0].name] / counts[targets[1].name] < 4.5
    assert {ring.choose(targets, None).name for _ in range(4)} == {t.name for t in targets}


def test_policy_names() -> None:
    targets = pool(1)
    assert isinstance(balancer("round_robin", targets), RoundRobin)
    assert isinstance(balancer("least_requests", targets), LeastRequests)
    assert isinstance(balancer("consistent_hash", targets), ConsistentHash)
