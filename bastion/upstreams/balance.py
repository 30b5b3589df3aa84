"""Choosing a target among the available ones: weighted round robin, least requests, consistent hashing.

Each balancer is told the candidates (available, not yet tried, breaker closed) and returns one of them.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from bastion.upstreams.target import TargetState


class RoundRobin:
    """Smooth weighted round robin (nginx's): weights 5,1,1 give a a b a c a a, never a burst of one target."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def choose(self, candidates: Sequence[TargetState], key: str | None) -> TargetState:
        current = self._current
        total = 0
        best: TargetState | None = None
        for target in candidates:
            weight = current.get(target.name, 0) + target.weight
            current[target.name] = weight
            total += target.weight
            if best is None or weight > current[best.name]:
                best = target
        if best is None:
            raise ValueError("no candidate target")
        current[best.name] -= total
        return best


class LeastRequests:
    """The candidate with the fewest requests in flight per unit of weight; ties go round robin."""

    def __init__(self) -> None:
        self._tie = RoundRobin()

    def choose(self, candidates: Sequence[TargetState], key: str | None) -> TargetState:
        lowest = min(t.active / t.weight for t in candidates)
        tied = [t for t in candidates if t.active / t.weight == lowest]
        return tied[0] if len(tied) == 1 else self._tie.choose(tied, key)


class ConsistentHash:
    """A hash ring (points per target in proportion to its weight): one key keeps its target while that target
    is available, and only the keys of a target that leaves move. Without a key, round robin."""

    def __init__(self, targets: Sequence[TargetState]) -> None:
        total = sum(t.weight for t in targets)
        ring: list[tuple[int, int]] = []
        for index, target in enumerate(targets):
            for replica in range(max(8, round(160 * len(targets) * target.weight / total))):
                ring.append((_hash(f"{target.name}#{replica}"), index))
        ring.sort()
        self._points = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]
        self._targets = list(targets)
        self._fallback = RoundRobin()

    def choose(self, candidates: Sequence[TargetState], key: str | None) -> TargetState:
        if key is None:
            return self._fallback.choose(candidates, key)
        allowed = {id(t) for t in candidates}
        start = bisect.bisect_left(self._points, _hash(key))
        size = len(self._points)
        for step in range(size):  # the next point clockwise whose target is a candidate
            target = self._targets[self._owners[(start + step) % size]]
            if id(target) in allowed:
                return target
        return self._fallback.choose(candidates, key)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


Balancer = RoundRobin | LeastRequests | ConsistentHash


def balancer(policy: str, targets: Sequence[TargetState]) -> Balancer:
    """The balancer of a `load_balancing.policy`."""
    if policy == "least_requests":
        return LeastRequests()
    if policy == "consistent_hash":
        return ConsistentHash(targets)
    return RoundRobin()
