"""The link between a worker and its supervisor: one Unix socket, framed JSON messages, calls both ways.

A frame is a 4-byte big-endian length and an orjson document. A call is `{"id": n, "op": "...", "args": [...]}`,
its answer `{"re": n, "ok": true, "value": ...}` or `{"re": n, "ok": false, "error": "..."}`. Several calls are in
flight at once (the id pairs answers with calls). The supervisor answers the workers' state calls (limits,
blocks, revocations, detection counters: the embedded shared state); the workers answer the supervisor's
control calls (status, prepare/commit/abort of a reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

MAX_FRAME = 16 * 1024 * 1024  # a frame larger than this is a bug or an attack: the link is closed
_HEADER = struct.Struct(">I")

Handler = Callable[[str, list[Any]], Awaitable[Any]]


class LinkClosed(Exception):
    """The other side went away, or did not answer within the call's timeout."""


class Link:
    """One end of a link. `call` sends and waits for the answer; incoming calls go to `handler`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler | None = None, inline: frozenset[str] = frozenset()) -> None:
        self._reader = reader
        self._writer = writer
        self._handler = handler
        # operations whose handler never suspends (the embedded state: dict operations): answered at once,
        # without a task per call, which is most of their cost
        self._inline = inline
        self._next = 0
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reading = asyncio.get_running_loop().create_task(self._read_loop())

    async def call(self, op: str, *args: Any, timeout: float = 1.0) -> Any:
        """The answer to `op(*args)`; raises LinkClosed when the link is down or the answer is late."""
        if self.closed.is_set():
            raise LinkClosed("link closed")
        self._next += 1
        ident = self._next
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            self._send({"id": ident, "op": op, "args": list(args)})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise LinkClosed(f"{op}: no answer within {timeout}s") from exc
        finally:
            self._waiting.pop(ident, None)

    def _send(self, doc: dict[str, Any]) -> None:
        data = orjson.dumps(doc)
        if self._writer.is_closing():
            raise LinkClosed("link closed")
        self._writer.write(_HEADER.pack(len(data)) + data)

    async def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = await self._reader.read(1 << 16)
                if not chunk:
                    break
                buffer += chunk
                # every complete frame in the buffer: under load many arrive in one read
                while len(buffer) >= 4:
                    (size,) = _HEADER.unpack_from(buffer)
                    if size > MAX_FRAME:
                        return
                    if len(buffer) < 4 + size:
                        break
                    doc = orjson.loads(buffer[4:4 + size])
                    buffer = buffer[4 + size:]
                    self._dispatch(doc)
        except (ConnectionError, OSError, orjson.JSONDecodeError, struct.error):
            pass
        finally:
            self._shut()

    def _dispatch(self, doc: dict[str, Any]) -> None:
        if "re" in doc:
            future = self._waiting.get(doc["re"])
            if future is not None and not future.done():
                if doc.get("ok"):
                    future.set_result(doc.get("value"))
                else:
                    future.set_exception(RemoteError(str(doc.get("error", ""))))
        elif self._handler is not None and doc.get("op") in self._inline:
            self._answer_now(doc)
        elif self._handler is not None:
            task = asyncio.get_running_loop().create_task(self._answer(doc))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, doc: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            value = await self._handler(str(doc.get("op", "")), list(doc.get("args") or []))
            reply = {"re": doc.get("id"), "ok": True, "value": value}
        except Exception as exc:  # the caller gets the failure as a value; this side keeps serving
            reply = {"re": doc.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(LinkClosed, ConnectionError, OSError):
            self._send(reply)

    def _answer_now(self, doc: dict[str, Any]) -> None:
        assert self._handler is not None
        coro = self._handler(str(doc.get("op", "")), list(doc.get("args") or []))
        try:
            coro.send(None)  # type: ignore[attr-defined]
        except StopIteration as done:  # finished without suspending: the usual case
            reply = {"re": doc.get("id"), "ok": True, "value": done.value}
        except Exception as exc:
            reply = {"re": doc.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:  # it suspended after all: a bug in the list of inline operations; answer it as an error
            coro.close()  # type: ignore[attr-defined]
            reply = {"re": doc.get("id"), "ok": False, "error": "RuntimeError: inline operation suspended"}
        with contextlib.suppress(LinkClosed, ConnectionError, OSError):
            self._send(reply)

    def _shut(self) -> None:
        self.closed.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkClosed("link closed"))
        with contextlib.suppress(Exception):
            self._writer.close()

    async def close(self) -> None:
        self._shut()
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading


class RemoteError(Exception):
    """The other side raised while answering a call (its type and message, as text)."""


async def connect(path: str, handler: Handler | None = None) -> Link:
    """The worker's end: connect to the supervisor's socket at `path`."""
    reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME)
    link = Link(reader, writer, handler)
    link.start()
    return link
