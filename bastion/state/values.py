"""The values a limit check trades: `Hit` (one limit to charge) and `Outcome` (what charging it found).

Compiled with mypyc (`bastion/native.py`): a rate-limited request builds one of each per limit, and as frozen
dataclasses each cost ~8.5 K instructions (the generated `__init__` runs `object.__setattr__` per field, even
compiled) against under 1 K as native classes. Both are immutable, as the dataclasses were: the fields are
`Final` (mypy refuses an assignment, the compiled class has no setter for them, the pure build refuses one:
`bastion.immutable.freeze_pure`); a changed copy comes from a named method (`leasing`, `refund`, `ungranted`,
`topped_up`).
"""

from __future__ import annotations

from typing import Final, Literal

from bastion.immutable import freeze_pure

Kind = Literal["token_bucket", "sliding_window", "fixed_window"]


class Hit:
    """One limit to charge for one request.

    - `token_bucket`: `limit` is the bucket size (burst), refilled from empty to full in `period` seconds
      (rate = limit / period).
    - `sliding_window`: at most `limit` units in any `period` seconds, estimated from the current and
      previous fixed windows (the previous one weighted by how much of it still overlaps), so no double quota
      at an edge.
    - `fixed_window`: at most `limit` units in the window starting at `anchor` (wall-clock seconds) and
      lasting `period` seconds: calendar quotas (a day, a month).

    `take` > `cost` asks for a lease: take up to `take` units if available (at least `cost`), see
    `Outcome.granted`.
    """

    __slots__ = ("anchor", "cost", "key", "kind", "limit", "period", "take")

    def __init__(self, key: str, kind: Kind, limit: float, period: float, cost: int = 1, take: int = 0,
                 anchor: float = 0.0) -> None:
        self.key: Final = key
        self.kind: Final[Kind] = kind
        self.limit: Final[float] = limit
        self.period: Final[float] = period
        self.cost: Final = cost
        self.take: Final = take
        self.anchor: Final[float] = anchor

    def leasing(self, take: int) -> Hit:
        """This hit asking for a lease of up to `take` units."""
        return Hit(self.key, self.kind, self.limit, self.period, self.cost, take, self.anchor)

    def refund(self, units: int) -> Hit:
        """A negative charge giving back `units` this hit took."""
        return Hit(self.key, self.kind, self.limit, self.period, -units, -units, self.anchor)

    def _values(self) -> tuple[str, str, float, float, int, int, float]:
        return self.key, self.kind, self.limit, self.period, self.cost, self.take, self.anchor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hit):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"Hit(key={self.key!r}, kind={self.kind!r}, limit={self.limit!r}, period={self.period!r}, "
                f"cost={self.cost!r}, take={self.take!r}, anchor={self.anchor!r})")


class Outcome:
    """What one hit found: admitted or not, what is left and when to come back."""

    __slots__ = ("allowed", "granted", "remaining", "reset", "retry_after")

    def __init__(self, allowed: bool, remaining: int, reset: float, retry_after: float, granted: int = 0) -> None:
        self.allowed: Final = allowed
        self.remaining: Final = remaining  # whole units left after this request (what a client may still send now)
        # seconds until the limit is fully (token bucket) or partly (windows) available again
        self.reset: Final[float] = reset
        self.retry_after: Final[float] = retry_after  # seconds until this hit could be admitted; 0 when admitted
        self.granted: Final = granted  # units actually taken (cost, or more for a lease; 0 when refused)

    def ungranted(self) -> Outcome:
        """The same answer with nothing taken (a request refused as a whole charges no limit)."""
        return Outcome(self.allowed, self.remaining, self.reset, self.retry_after, 0)

    def topped_up(self, extra: int) -> Outcome:
        """The same answer with `extra` more units remaining."""
        return Outcome(self.allowed, self.remaining + extra, self.reset, self.retry_after, self.granted)

    def _values(self) -> tuple[bool, int, float, float, int]:
        return self.allowed, self.remaining, self.reset, self.retry_after, self.granted

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"Outcome(allowed={self.allowed!r}, remaining={self.remaining!r}, reset={self.reset!r}, "
                f"retry_after={self.retry_after!r}, granted={self.granted!r})")


freeze_pure(Hit, Outcome)  # the pure build refuses what the compiled classes cannot do
