"""Syslog: RFC 5424 messages over TCP with octet-counting framing (RFC 6587 §3.4.1), or over TLS (RFC 5425).

Plain syslog has no acknowledgement: bytes the kernel accepted may still be lost when the receiver dies. So
the frames written in the last `resend_window` seconds are kept, and when the connection is found broken they
are written again, first, on the new connection. Delivery is therefore at least once; each event carries a
unique `metadata.uid` for the receiver to de-duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from bastion.audit.sinks import SinkError

# RFC 5424 §6.1: HOSTNAME, APP-NAME and PROCID are printable US-ASCII without spaces
_PRINTABLE = {i for i in range(33, 127)}


def _token(text: str, limit: int) -> str:
    clean = "".join(c for c in text if ord(c) in _PRINTABLE)[:limit]
    return clean or "-"


def severity_of(line: bytes) -> int:
    """RFC 5424 severity from the event: 1 alert (findings), 4 warning (denials), 6 informational."""
    if b'"class_uid":2004' in line:
        return 1
    if b'"status_id":2' in line:
        return 4
    return 6


class SyslogSink:
    """One TCP (or TLS) connection to a syslog receiver, re-established on demand."""

    def __init__(self, name: str, host: str, port: int, *, context: ssl.SSLContext | None = None,
                 server_name: str | None = None, app_name: str = "bastion", facility: int = 13,
                 timeout: float = 5.0, resend_window: float = 5.0, max_resend: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.context = context
        self.server_name = server_name or host
        self.timeout = timeout
        self.resend_window = resend_window
        self.facility = facility
        self._clock = clock
        self._header_tail = (f" {_token(socket.gethostname(), 255)} {_token(app_name, 48)} "
                             f"{os.getpid()} audit - ").encode()
        self._writer: asyncio.StreamWriter | None = None
        self._watch: asyncio.Task[None] | None = None
        self._broken_at: float | None = None
        self._recent: deque[tuple[float, bytes]] = deque(maxlen=max_resend)
        self.resent = 0  # frames written again after a broken connection (for tests and metrics)

    def frame(self, line: bytes) -> bytes:
        msg = line.rstrip(b"\n")
        pri = self.facility * 8 + severity_of(msg)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = b"<%d>1 %s%s%s" % (pri, stamp.encode(), self._header_tail, msg)
        return b"%d %s" % (len(record), record)

    async def _connect(self) -> None:
        await self._drop()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.context,
                    server_hostname=self.server_name if self.context else None)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SinkError(f"syslog {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        self._writer = writer
        self._watch = asyncio.get_running_loop().create_task(self._watch_peer(reader))

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        """A syslog receiver never sends; EOF or an error means the connection is gone."""
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass
        if self._broken_at is None:
            self._broken_at = self._clock()

    async def _drop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def deliver(self, lines: list[bytes]) -> None:
        now = self._clock()
        resend: list[tuple[float, bytes]] = []
        writer = self._writer
        if writer is None or self._broken_at is not None or writer.is_closing():
            if writer is not None and self._broken_at is None:
                self._broken_at = now
            await self._connect()  # raises SinkError; what awaits resending stays in self._recent
            if self._broken_at is not None:
                horizon = self._broken_at - self.resend_window
                resend = [item for item in self._recent if item[0] >= horizon]
            self._recent.clear()
            self._broken_at = None
            writer = self._writer
        if writer is None:
            raise SinkError("syslog: not connected")
        frames = [self.frame(line) for line in lines]
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(b"".join(frame for _, frame in resend) + b"".join(frames))
                await writer.drain()
        except (OSError, TimeoutError, ssl.SSLError, RuntimeError) as exc:
            failure = exc
        if failure is not None or self._broken_at is not None:
            # the receiver went away: the resent frames (and this batch, retried by the channel) may be lost
            if self._broken_at is None:
                self._broken_at = now
            self._recent.extendleft(reversed(resend))
            detail = f"{type(failure).__name__}: {failure}" if failure else "connection closed by the receiver"
            raise SinkError(f"syslog {self.host}:{self.port}: {detail}")
        self.resent += len(resend)
        recent = self._recent
        recent.extend((now, frame) for _, frame in resend)
        recent.extend((now, frame) for frame in frames)
        horizon = now - self.resend_window
        while recent and recent[0][0] < horizon:
            recent.popleft()

    async def close(self) -> None:
        await self._drop()
