"""Real receivers for the sink tests: a private rsyslogd (Debian's rsyslog) and an asyncio HTTP collector.

Both can be stopped and started again on the same port, and both de-duplicate by `metadata.uid` while keeping
the raw count, so a test can assert "every event exactly once" after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


@dataclass
class Rsyslog:
    """rsyslogd -n with its own config: imtcp (optionally TLS via the ossl driver) -> omfile (MSG only)."""

    directory: Path
    port: int = 0
    tls: tuple[Path, Path, Path] | None = None  # (ca, cert, key)
    process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> Path:
        return self.directory / "received.log"

    def _config(self) -> str:
        globals_ = f'workDirectory="{self.directory}" maxMessageSize="256k"'
        if self.tls is not None:
            ca, cert, key = self.tls
            globals_ += (f' DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}"'
                         f' DefaultNetstreamDriverKeyFile="{key}"')
            module = 'module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'
        else:
            module = 'module(load="imtcp")'
        return f"""
global({globals_})
main_queue(queue.timeoutShutdown="10000")
{module}
input(type="imtcp" port="{self.port}" address="127.0.0.1")
template(name="msgonly" type="string" string="%msg%\\n")
action(type="omfile" file="{self.output}" template="msgonly" flushOnTXEnd="on" asyncWriting="off")
"""

    def start(self) -> Rsyslog:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.directory / "rsyslog.conf"
        conf.write_text(self._config())
        self.process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.directory / "pid")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready when it accepts
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def messages(self) -> list[dict]:
        if not self.output.exists():
            return []
        events = []
        text = self.output.read_text()
        # rsyslog may be mid-write: a last line without its newline is not complete yet (read it next time)
        for line in text[:text.rfind("\n") + 1].splitlines():
            line = line.strip()
            if line:
                events.append(json.loads(line))
        return events


@dataclass
class HttpCollector:
    """An HEC-like collector: POST bodies of concatenated `{"event": ...}` objects (or NDJSON), bearer auth."""

    token: str = "hec-token"
    port: int = 0
    status: int = 200
    delay: float = 0.0
    raw: list[dict] = field(default_factory=list)
    unauthorised: int = 0
    keys: list[str] = field(default_factory=list)  # the Idempotency-Key of every accepted POST
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = self.status
                if headers.get("authorization") != f"Bearer {self.token}":
                    self.unauthorised += 1
                    status = 401
                elif status == 200:
                    self.raw.extend(_decode(body))
                    self.keys.append(headers.get("idempotency-key", ""))
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def start(self) -> HttpCollector:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, limit=16 * 1024 * 1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/collector"


def _decode(body: bytes) -> list[dict]:
    text = body.decode()
    decoder = json.JSONDecoder()
    out, index = [], 0
    while index < len(text):
        while index < len(text) and text[index] in " \r\n\t":
            index += 1
        if index >= len(text):
            break
        obj, index = decoder.raw_decode(text, index)
        out.append(obj.get("event", obj))
    return out


def exactly_once(events: list[dict], expected: list[str]) -> tuple[int, list[str]]:
    """(raw duplicates, uids in first-arrival order after de-duplication) of the events received."""
    seen: dict[str, None] = {}
    duplicates = 0
    for event in events:
        uid = event["metadata"]["uid"] if "metadata" in event else event["event"]["id"]
        if uid in seen:
            duplicates += 1
        seen[uid] = None
    unique = list(seen)
    assert set(unique) == set(expected), (len(set(expected) - set(unique)), "missing", len(set(unique) - set(expected)))
    return duplicates, unique


