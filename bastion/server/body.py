"""A request body as it arrives, protocol-neutral: fed by HTTP/1.1 or HTTP/2, read by the handler, bounded.

Each exchange holds one `RequestBody`. The protocol shell feeds what the client sends (`feed`, `finish`,
`fail`); the handler reads it (`read`) once it knows the route and has set its limit (`set_limit`). A read that
waits is watched by the loop's swept deadlines (`server.deadlines`): no timer is armed per read, on either
protocol. What differs between the protocols (HTTP/1.1 resumes reading the socket, HTTP/2 opens the client's
flow-control window) is the owner's `body_read` / `body_failed`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bastion.http.framing import FramingError
from bastion.server.deadlines import NEVER, deadlines


class BodyTooLarge(Exception):
    """The request body passed the route's limit."""


class BodyTimeout(Exception):
    """The client stopped sending its body."""


class ClientGone(Exception):
    """The client closed the connection (or reset the stream)."""


class BodyMalformed(Exception):
    """The request body's framing was invalid (e.g. a bad chunk size)."""

    def __init__(self, error: FramingError) -> None:
        super().__init__(error.message)
        self.error = error


BodyError = BodyTooLarge | BodyTimeout | BodyMalformed


class BodyOwner(Protocol):
    """The protocol side of a body: told when the handler consumed bytes, and when the body failed."""

    def body_read(self) -> None:
        """Buffered bytes were handed to the handler: the client may send more."""

    def body_failed(self) -> None:
        """The body failed: nobody will read what is buffered."""


class RequestBody:
    """The bytes of one request body, between the protocol that receives them and the handler that reads them."""

    __slots__ = ("_chunks", "_error", "_idle_timeout", "_owner", "_waiter", "buffered", "deadline", "done",
                 "first_at", "limit", "seen")

    def __init__(self, owner: BodyOwner, idle_timeout: float, *, done: bool = False) -> None:
        self._owner = owner
        self._idle_timeout = idle_timeout
        self._chunks: list[bytes] = []  # always read whole: a list is enough (and cheaper to make than a deque)
        self.buffered = 0  # bytes received and not read yet
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deadline = NEVER  # loop time by which a waiting read must have data (swept by `Deadlines`)
        self.done = done  # the last byte arrived (or there is no body)
        self.first_at = 0.0  # loop time of the first byte, for the minimum-rate check
        self.limit: int | None = None
        self.seen = 0  # bytes received, whether read or not

    # ---- state --------------------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """The whole body arrived and was read."""
        return self.done and not self._chunks

    @property
    def received(self) -> bool:
        """The whole body arrived (it may still be waiting to be read) and nothing went wrong with it."""
        return self.done and self._error is None

    @property
    def failed(self) -> bool:
        return self._error is not None

    # ---- the protocol side --------------------------------------------------------------------------------

    def set_limit(self, limit: int) -> None:
        """Refuse the body once it passes `limit` bytes (including what already arrived)."""
        self.limit = limit
        if self.seen > limit:
            self._drop()
            self.fail(BodyTooLarge())

    def feed(self, data: bytes) -> bool:
        """Bytes from the client. False when they are refused (over the limit, or the body already failed)."""
        self.seen += len(data)
        if self._error is not None or (self.limit is not None and self.seen > self.limit):
            self.fail(BodyTooLarge())
            return False
        self._chunks.append(data)
        self.buffered += len(data)
        if self._waiter is not None:
            self._wake()
        return True

    def finish(self) -> None:
        """The last byte arrived."""
        self.done = True
        if self._waiter is not None:
            self._wake()

    def fail(self, error: Exception) -> None:
        """The body cannot be completed: every later read raises `error` (the first failure wins)."""
        if self._error is None:
            self._error = error
            self._owner.body_failed()
        self._wake()

    def too_slow(self, now: float, rate: int, grace: float) -> bool:
        """Slow-client protection: once `grace` seconds have passed since the first byte, the body must have
        averaged `rate` bytes/s."""
        if not self.first_at:
            self.first_at = now
        elapsed = now - self.first_at
        return elapsed > grace and self.seen < rate * elapsed

    def expire(self) -> None:
        """The deadline of a waiting read passed: the client stopped sending."""
        self.deadline = NEVER
        if self._waiter is not None:
            self.fail(BodyTimeout())

    # ---- the handler side ---------------------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next piece of the body, or b"" at its end. Raises BodyTooLarge, BodyTimeout, BodyMalformed or
        ClientGone."""
        while True:
            if self._error is not None:
                raise self._error
            chunks = self._chunks
            if chunks:
                data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
                chunks.clear()
                self.buffered = 0
                self._owner.body_read()
                return data
            if self.done:
                return b""
            await self._wait()

    def whole(self) -> bytes | None:
        """The whole body at once, without waiting, when all of it has arrived and nothing went wrong; else None
        (then `read` it). The common case of a small body that came with its head."""
        if not self.done or self._error is not None:
            return None
        chunks = self._chunks
        if not chunks:
            return b""
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        chunks.clear()
        self.buffered = 0
        self._owner.body_read()
        return data

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        sweep = deadlines()
        sweep.add(self, self._idle_timeout)
        self.deadline = loop.time() + self._idle_timeout
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self.deadline = NEVER
            sweep.discard(self)

    def _drop(self) -> None:
        self._chunks.clear()
        self.buffered = 0

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)



class _NoOwner:
    def body_read(self) -> None:
        pass

    def body_failed(self) -> None:
        pass


class _NoBody(RequestBody):
    """The body of a request that has none: complete from the start, nothing to feed, limit or fail. One object
    serves every such request (most of them), so they build no body of their own."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_NoOwner(), 0.0, done=True)

    def set_limit(self, limit: int) -> None:
        pass

    def feed(self, data: bytes) -> bool:
        return False

    def finish(self) -> None:
        pass

    def fail(self, error: Exception) -> None:
        pass  # nothing to read, so nothing to fail: a read still ends at once

    def expire(self) -> None:
        pass

    async def read(self) -> bytes:
        return b""


NO_BODY: RequestBody = _NoBody()
