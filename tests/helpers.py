"""Test helpers: run a real gateway in-process on loopback, and talk raw HTTP to it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from bastion.demo.upstream import start_upstream
from bastion.server.app import Runtime
from bastion.stages.base import Services

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing is bound to now, and never handed out before in this test session.

    The port is free only until someone binds it, and the kernel may pick the same one again for the next ask
    (~1 in 14,000 here): `Gateway` asks three times before starting anything. With its upstream's port as admin
    port, the demo upstream's echo answers `/readyz` 200 and `/config` with JSON without "workers": the symptom
    of a CI failure. A port is handed out once, so the processes of one test, and a late one of an earlier test,
    never share one.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if claim_port(port):
            return port


def connections_to(port: int) -> int:
    """Established loopback TCP connections whose far end is `port` (e.g. a gateway's connections to its upstream:
    a request forwarded is in flight for sure, one merely sent may still wait in the kernel's accept queue)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                count += 1
    return count


def early_in_a_window(period: float = 60.0, needed: float = 20.0) -> None:
    """Sleep past the next wall-clock window edge when fewer than `needed` seconds are left before it.

    Rate-limit windows are aligned to the wall clock (`floor(now / period)`), and past an edge the previous
    window's count decays: a run of requests that crosses one rightly admits more than `limit` in all, so a test
    that counts exactly (and cannot inject the clock of a gateway process) starts early in a window."""
    left = period - time.time() % period
    if left < needed:
        time.sleep(left + 0.05)


def claim_port(port: int) -> bool:
    """Record `port` as handed out (by `free_port` or a helper that picks its own); False if it already was."""
    if port in _HANDED_OUT:
        return False
    _HANDED_OUT.add(port)
    return True


@asynccontextmanager
async def upstream_server() -> AsyncIterator[int]:
    server = await start_upstream("127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def running_gateway(tmp_path: Path, config: str, services: Services | None = None) -> AsyncIterator[Runtime]:
    """Write `config` (dedented; `{upstream}` is replaced by a live echo upstream's URL) and serve it."""
    async with upstream_server() as up_port:
        path = tmp_path / "bastion.yaml"
        path.write_text(textwrap.dedent(config).replace("{upstream}", f"http://127.0.0.1:{up_port}"))
        runtime = Runtime(path, services=services)
        await runtime.start()
        try:
            yield runtime
        finally:
            await runtime.stop(drain_timeout=1.0)


async def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


async def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request with `Connection: close`; returns status, headers (lower-case) and body."""
    head = [f"{method} {path} HTTP/1.1", "Host: gateway.test", "Connection: close"]
    for name, value in (headers or {}).items():
        head.append(f"{name}: {value}")
    if body:
        head.append(f"Content-Length: {len(body)}")
    raw = await exchange(port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        data = rest[size + 2:]
    return b"".join(out)


# The start of an in-process test's config (no trailing newline: a test appends the rest of the gateway section
# or its classes from the next line on): the listener and the admin API on loopback, ports picked by the OS.
LOOPBACK_GATEWAY = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {address: 127.0.0.1, port: 0}"""

# The same head for a str.format() template (braces doubled), with no admin API and the audit events in
# audit.jsonl, for tests that read the gateway's decisions from that file.
FILE_AUDIT_GATEWAY_FORMAT = """
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0}}]
  admin: {{enabled: false, port: 0}}
  audit: {{sinks: [{{type: file, path: audit.jsonl}}]}}"""

BASIC = LOOPBACK_GATEWAY + """
classes:
  open:
    identity: {required: false}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: {upstream}
    base_path: /shop
    routes:
      - {name: list-items, path: /items, methods: [GET, POST]}
      - {name: get-item, path: "/items/{id}", methods: [GET, PUT]}
"""


def wait_http(url: str, timeout: float = 90.0) -> None:
    """Poll `url` until it answers 200 (a process's readiness), or fail the test.

    The default is generous on purpose: it only lengthens a failing run, and a gateway process's start (imports,
    config compile, on the pure build) took over 30 s on a 2-CPU machine loaded with compiles and benchmarks."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # e.g. 503 from /readyz, with its reasons: say them if we give up
            last = f"{exc.code} {exc.read()[:500]!r}"
            time.sleep(0.05)
        except OSError as exc:
            last = repr(exc)
            time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout:g}s: {last}")


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    """A blocking GET for tests that drive real processes: status, lower-case headers, body."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# An internal class that requires TLS, and a route let through without it by exception EXC-42 between
# `{created}` and `{expires}` (the tests pick the instants around their injected clock).
LEGACY_TLS_EXCEPTION = LOOPBACK_GATEWAY + """
  audit: {sinks: [{type: file, path: audit.jsonl}]}
classes:
  internal:
    transport: {tls: required}
    identity: {required: false}
apis:
  - name: legacy
    owner: team-legacy@example.com
    class: internal
    upstream: {upstream}
    routes:
      - {name: ping, path: /ping, methods: [GET], policy: {transport: {tls: optional}}}
      - {name: pong, path: /pong, methods: [GET]}
exceptions:
  - id: EXC-42
    target: {api: legacy, route: ping}
    controls: [transport.tls]
    owner: bob@example.com
    reason: health checker cannot speak TLS until Q1
    evidence: https://tickets.example.com/SEC-42
    created: {created}
    expires: {expires}
"""


def legacy_tls_exception(created: str, expires: str) -> str:
    return LEGACY_TLS_EXCEPTION.replace("{created}", created).replace("{expires}", expires)


def process_config(port: int, admin: int, upstream: int, extra_gateway: str = "", extra: str = "") -> str:
    """The config of a gateway run as a real process (`bastion serve`) on the given loopback ports: the `shop`
    API (GET /items, GET /slow) on `upstream`, open to anyone; `extra_gateway` goes into the gateway section,
    `extra` after the APIs."""
    return textwrap.dedent(f"""
        version: 1
        gateway:
          listeners: [{{address: 127.0.0.1, port: {port}}}]
          admin: {{address: 127.0.0.1, port: {admin}}}
          limits: {{drain_timeout: 10s}}
        """) + textwrap.indent(textwrap.dedent(extra_gateway), "  ") + textwrap.dedent(f"""
        classes:
          open: {{identity: {{required: false}}}}
        apis:
          - name: shop
            owner: team-shop@example.com
            class: open
            upstream: http://127.0.0.1:{upstream}
            routes:
              - {{name: items, path: /items, methods: [GET]}}
              - {{name: slow, path: /slow, methods: [GET]}}
        """) + textwrap.dedent(extra)


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Terminate every process, then wait for each; one that outlives `timeout` is killed."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def gateway_nodes(tmp_path: Path, count: int, config: Callable[[int, int, int], str]) -> Iterator[list[tuple[int, int]]]:
    """A demo upstream and `count` `bastion serve` processes, each with the config `config(port, admin,
    upstream)` returns for its own free ports; yields their (port, admin) pairs once all are ready, and stops
    every process after."""
    upstream = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(upstream)])]
    nodes: list[tuple[int, int]] = []
    try:
        for i in range(count):
            port, admin = free_port(), free_port()
            path = tmp_path / f"node{i}.yaml"
            path.write_text(config(port, admin, upstream))
            procs.append(subprocess.Popen([sys.executable, "-m", "bastion", "serve", "-c", str(path)]))
            nodes.append((port, admin))
        for _, admin in nodes:
            wait_http(f"http://127.0.0.1:{admin}/readyz")
        yield nodes
    finally:
        stop_processes(procs)
