"""Write-side flow control of one transport, shared by the client connections and both upstream clients.

asyncio calls `pause_writing` / `resume_writing` on a protocol when its transport's buffer passes the high-water
mark; a writer awaits `wait()` before it writes more, so neither side makes the gateway buffer without bound.
"""

from __future__ import annotations

import asyncio


class WriteFlow:
    """Whether a transport may be written to now, and a wait for when it may."""

    __slots__ = ("_loop", "_waiter", "paused")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self.paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def release(self, error: Exception | None = None) -> None:
        """The transport is gone: a waiting writer goes on (or gets `error`)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
                waiter.exception()  # retrieved: whoever awaits it still gets the error

    async def wait(self) -> None:
        """Return once the transport takes writes again (at once when it does)."""
        if not self.paused:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
