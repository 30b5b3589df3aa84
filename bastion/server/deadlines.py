"""Connection timeouts as deadlines, checked by one periodic sweep per event loop.

Every request arms and disarms several timeouts (request head, body idle, upstream response, keep-alive). As
loop timers that is a `call_later` and a `cancel` each, ~2 µs apiece under uvloop, on every request; as
deadlines it is an attribute write, and one sweep a few times a second finds the ones that passed. A timeout
fires between its deadline and one sweep interval later; the interval follows the smallest timeout asked for
(an eighth of it, between 5 ms and 250 ms).
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

NEVER = math.inf

_FINEST = 0.005
_COARSEST = 0.25


class Timed(Protocol):
    deadline: float  # loop time; NEVER when nothing is armed

    def expire(self) -> None:
        """The deadline passed: act on it (and re-arm or set NEVER)."""


class Deadlines:
    """The sweep for one event loop: members register for their lifetime, arming is `member.deadline = t`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.interval = _COARSEST
        self._members: set[Timed] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, member: Timed, timeout: float) -> None:
        """Watch `member`, whose timeouts are never shorter than `timeout` seconds."""
        self.interval = min(self.interval, max(_FINEST, timeout / 8))
        self._members.add(member)
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._sweep)

    def discard(self, member: Timed) -> None:
        self._members.discard(member)

    def _sweep(self) -> None:
        try:
            now = self.loop.time()
            for member in [m for m in self._members if m.deadline <= now]:
                try:
                    member.expire()
                except Exception as exc:  # one member's failure must not stop the others' timeouts
                    self.loop.call_exception_handler({"message": "deadline expiry failed", "exception": exc})
        finally:  # whatever happened, the sweep goes on while anything is watched
            self._handle = self.loop.call_later(self.interval, self._sweep) if self._members else None


_sweeps: dict[asyncio.AbstractEventLoop, Deadlines] = {}


def deadlines() -> Deadlines:
    """The sweep of the running loop (created on first use; a closed loop's is dropped)."""
    loop = asyncio.get_running_loop()
    sweep = _sweeps.get(loop)
    if sweep is None:
        for old in [old for old in _sweeps if old.is_closed()]:
            del _sweeps[old]
        sweep = _sweeps[loop] = Deadlines(loop)
    return sweep
