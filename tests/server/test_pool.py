"""Upstream pools end to end: real upstream processes that die, hang and come back behind a real gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.server.app import Runtime
from tests.helpers import FILE_AUDIT_GATEWAY_FORMAT, free_port, request

CONFIG = FILE_AUDIT_GATEWAY_FORMAT + """
classes:
  open:
    identity: {{required: false, methods: []}}
    input: {{contract: "off", inspection: "off"}}
    traffic: {{upstream_timeout: 600ms, upstream_connect_timeout: 500ms}}
apis:
  - name: shop
    owner: o@example.com
    class: open
    upstream: [{targets}]
    load_balancing: {lb}
    routes: [{{name: items, path: /items, methods: [GET, POST]}}]
"""


class Target:
    """A demo upstream process on a fixed port that a test can kill, freeze, thaw and restart."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bastion.demo.upstream", str(self.port), self.name])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"target {self.name} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def targets() -> Iterator[tuple[Target, Target]]:
    a, b = Target("a"), Target("b")
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        for target in (a, b):
            if target.proc is not None:
                target.signal(signal.SIGCONT)
            target.kill()


async def _gateway(tmp_path: Path, targets: str, lb: str) -> Runtime:
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(targets=targets, lb=lb)))
    runtime = Runtime(path)
    await runtime.start()
    return runtime


async def _who(port: int, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    status, _, body = await request(port, method, "/items", headers, body=b"x" if method == "POST" else b"")
    return status, json.loads(body).get("instance", "") if status == 200 else ""


def _events(tmp_path: Path, action: str) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e.get("api", {}).get("operation") == f"upstream.{action}"]


async def _has(tmp_path: Path, action: str, count: int = 1) -> bool:
    return len(_events(tmp_path, action)) >= count


async def _serves(port: int, instance: str) -> bool:
    """`instance` answers one of four requests (round robin or least requests over two targets)."""
    return instance in {(await _who(port))[1] for _ in range(4)}


async def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def test_a_dead_target_is_ejected_requests_keep_succeeding_and_it_comes_back(tmp_path, targets):
    a, b = targets
    runtime = await _gateway(tmp_path, f"{a.url}, {b.url}",
                             "{outlier: {consecutive_connect_failures: 1, base_ejection: 1s}, "
                             "health_check: {path: /healthz, interval: 200ms, timeout: 300ms, "
                             "healthy_threshold: 1, unhealthy_threshold: 2}}")
    port = runtime.bound[0][1]
    try:
        assert {(await _who(port))[1] for _ in range(4)} == {"a", "b"}  # round robin
        b.kill()
        answers = [await _who(port) for _ in range(12)]
        assert answers == [(200, "a")] * 12  # the failed connect is retried on a, then b is ejected
        await _until(lambda: _has(tmp_path, "ejected"))
        ejected = _events(tmp_path, "ejected")[0]
        assert ejected["unmapped"]["bastion"]["target"] == f"127.0.0.1:{b.port}"
        assert ejected["unmapped"]["bastion"]["reason"] == "consecutive_connect_failures"
        metrics = runtime.gateway.pool_metrics
        assert metrics.events.labels("shop", f"127.0.0.1:{b.port}", "ejected")._value.get() >= 1
        assert metrics.retries.labels("shop", "upstream_connect_failed")._value.get() >= 1
        b.start()  # back on the same port: probes pass, the ejection ends, it takes requests again
        await _until(lambda: _serves(port, "b"))
        # a POST whose target is dead is retried too: nothing was sent, so no effect can repeat
        b.kill()
        assert [(await _who(port, "POST"))[0] for _ in range(6)] == [200] * 6
    finally:
        await runtime.stop(drain_timeout=0.5)


async def test_a_hanging_target_costs_one_timeout_then_stays_out_for_its_ejection(tmp_path, targets):
    a, b = targets
    runtime = await _gateway(tmp_path, f"{a.url}, {b.url}",
                             "{policy: least_requests, outlier: {consecutive_5xx: 1, base_ejection: 30s}, "
                             "health_check: {path: /healthz, interval: 200ms, timeout: 200ms, "
                             "healthy_threshold: 2, unhealthy_threshold: 1}}")
    port = runtime.bound[0][1]
    try:
        b.signal(signal.SIGSTOP)  # the kernel still accepts connections; nothing answers
        started = time.monotonic()
        answers = [await _who(port) for _ in range(6)]
        assert answers == [(200, "a")] * 6  # a GET that timed out on b was retried on a
        assert time.monotonic() - started < 3.0
        # a POST is not idempotent: it is never sent twice; with b out, it goes to a
        assert await _who(port, "POST") == (200, "a")
        b.signal(signal.SIGCONT)
        with pytest.raises(AssertionError):  # ejected for 30s: a thaw alone does not bring it back early
            await _until(lambda: _serves(port, "b"), timeout=1.0)
    finally:
        await runtime.stop(drain_timeout=0.5)


async def test_a_hung_target_that_thaws_comes_back(tmp_path, targets):
    a, b = targets
    runtime = await _gateway(tmp_path, f"{a.url}, {b.url}",
                             "{outlier: {consecutive_5xx: 1, base_ejection: 500ms}, "
                             "health_check: {path: /healthz, interval: 200ms, timeout: 200ms, "
                             "healthy_threshold: 1, unhealthy_threshold: 1}}")
    port = runtime.bound[0][1]
    try:
        b.signal(signal.SIGSTOP)
        assert [await _who(port) for _ in range(4)] == [(200, "a")] * 4
        b.signal(signal.SIGCONT)
        await _until(lambda: _serves(port, "b"))  # its ejection ended and its probes pass again
        await _until(lambda: _has(tmp_path, "ejected"))
        assert _events(tmp_path, "ejected")[0]["unmapped"]["bastion"]["target"] == f"127.0.0.1:{b.port}"
    finally:
        await runtime.stop(drain_timeout=0.5)


async def test_a_post_to_a_hanging_target_is_not_retried(tmp_path, targets):
    a, b = targets
    runtime = await _gateway(tmp_path, f"{b.url}, {a.url}", "{outlier: {consecutive_5xx: 5}}")
    port = runtime.bound[0][1]
    try:
        b.signal(signal.SIGSTOP)
        statuses = [(await _who(port, "POST"))[0] for _ in range(2)]
        assert sorted(statuses) == [200, 504]  # round robin: the one sent to b times out and stays a 504
        assert sorted([(await _who(port))[0] for _ in range(2)]) == [200, 200]  # GETs are retried on a
    finally:
        await runtime.stop(drain_timeout=0.5)


# ---- in-process upstreams whose answers the test decides -------------------------------------------------

class Scripted:
    """A loopback HTTP/1.1 server that answers every request with the same bytes; `close` drops its clients."""

    def __init__(self, server: asyncio.Server, seen: list[str], writers: set[asyncio.StreamWriter]) -> None:
        self.server, self.seen, self.writers = server, seen, writers

    def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()


async def _scripted(answer: bytes, gate: asyncio.Event | None = None) -> tuple[Scripted, list[str]]:
    seen: list[str] = []
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b" ", 2)[0].decode())
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if gate is not None:
                    await gate.wait()
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return Scripted(server, seen, writers), seen


def _answer(status: int, name: str, extra: str = "") -> bytes:
    body = json.dumps({"instance": name}).encode()
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def _url(scripted: Scripted) -> str:
    return f"http://127.0.0.1:{scripted.server.sockets[0].getsockname()[1]}"


async def test_a_503_with_retry_after_is_retried_elsewhere_and_the_target_rests(tmp_path):
    busy, busy_seen = await _scripted(_answer(503, "busy", "retry-after: 30\r\n"))
    good, good_seen = await _scripted(_answer(200, "good"))
    runtime = await _gateway(tmp_path, f"{_url(busy)}, {_url(good)}", "{outlier: {consecutive_5xx: 50}}")
    port = runtime.bound[0][1]
    try:
        post_status, _ = await _who(port, "POST")  # round robin starts with busy: a POST is not retried
        assert post_status == 503
        assert [await _who(port) for _ in range(5)] == [(200, "good")] * 5
        assert busy_seen == ["POST"]  # Retry-After: 30 -> busy is not asked again for 30 s
        await _until(lambda: _has(tmp_path, "retry_after"))
        [event] = _events(tmp_path, "retry_after")
        assert event["unmapped"]["bastion"]["seconds"] == 30
    finally:
        await runtime.stop(drain_timeout=0.5)
        busy.close()
        good.close()


async def test_a_dropped_5xx_is_retried_with_no_trace_of_it_for_the_client(tmp_path):
    bad, _ = await _scripted(_answer(502, "bad"))
    good, _ = await _scripted(_answer(200, "good"))
    runtime = await _gateway(tmp_path, f"{_url(bad)}, {_url(good)}", "{outlier: {consecutive_5xx: 2}}")
    port = runtime.bound[0][1]
    try:
        assert [await _who(port) for _ in range(6)] == [(200, "good")] * 6
        await _until(lambda: _has(tmp_path, "ejected"))
        assert len(_events(tmp_path, "ejected")) == 1  # two 502 in a row ejected bad
    finally:
        await runtime.stop(drain_timeout=0.5)
        bad.close()
        good.close()


async def test_full_targets_trip_the_breaker_with_503_and_retry_after(tmp_path):
    gate = asyncio.Event()
    one, _ = await _scripted(_answer(200, "one"), gate)
    two, _ = await _scripted(_answer(200, "two"), gate)
    runtime = await _gateway(tmp_path, f"{_url(one)}, {_url(two)}",
                             "{breaker: {max_connections: 1, max_pending: 0, retry_after: 2s}}")
    port = runtime.bound[0][1]
    try:
        held = [asyncio.create_task(_who(port)) for _ in range(2)]
        await asyncio.sleep(0.3)
        status, headers, body = await request(port, "GET", "/items")
        assert status == 503 and headers["retry-after"] == "2"
        assert b"127.0.0.1" not in body and json.loads(body)["status"] == 503  # no target named to the client
        gate.set()
        assert sorted(name for _, name in await asyncio.gather(*held)) == ["one", "two"]
        assert (await _who(port))[0] == 200  # room again: the breaker closed
        await _until(lambda: _has(tmp_path, "breaker_open", 2))
        assert len(_events(tmp_path, "breaker_open")) == 2  # one event per target's trip, not per request
        lines = (tmp_path / "audit.jsonl").read_text().splitlines()
        reasons = [e["unmapped"]["bastion"].get("reason") for e in map(json.loads, lines) if e.get("status_code") == "503"]
        assert reasons == ["upstream_overloaded"]
    finally:
        await runtime.stop(drain_timeout=0.5)
        one.close()
        two.close()


async def test_no_target_left_is_503_with_retry_after(tmp_path):
    runtime = await _gateway(tmp_path, f"http://127.0.0.1:{free_port()}, http://127.0.0.1:{free_port()}",
                             "{outlier: {consecutive_connect_failures: 1, base_ejection: 20s, max_ejected_percent: 100}}")
    port = runtime.bound[0][1]
    try:
        first = await request(port, "GET", "/items")
        assert first[0] == 502  # both refused the connection: the error of the last attempt
        status, headers, _ = await request(port, "GET", "/items")
        assert status == 503 and 18 <= int(headers["retry-after"]) <= 20
    finally:
        await runtime.stop(drain_timeout=0.5)


async def test_consistent_hash_on_a_header_keeps_a_tenant_on_one_target(tmp_path):
    servers = [await _scripted(_answer(200, name)) for name in ("x", "y", "z")]
    runtime = await _gateway(tmp_path, ", ".join(_url(s) for s, _ in servers),
                             "{policy: consistent_hash, hash_on: 'header:x-tenant'}")
    port = runtime.bound[0][1]
    try:
        for tenant in ("t1", "t2", "t3", "t4"):
            seen = {(await _who(port, headers={"x-tenant": tenant}))[1] for _ in range(4)}
            assert len(seen) == 1
        spread = {(await _who(port, headers={"x-tenant": f"t{n}"}))[1] for n in range(30)}
        assert len(spread) >= 2
    finally:
        await runtime.stop(drain_timeout=0.5)
        for server, _ in servers:
            server.close()


async def test_zone_preference_falls_back_when_the_local_zone_is_down(tmp_path):
    near, _ = await _scripted(_answer(200, "near"))
    far, _ = await _scripted(_answer(200, "far"))
    runtime = await _gateway(tmp_path, f"{{url: '{_url(near)}', zone: z1}}, {{url: '{_url(far)}', zone: z2}}",
                             "{local_zone: z1, outlier: {consecutive_connect_failures: 1}}")
    port = runtime.bound[0][1]
    try:
        assert [await _who(port) for _ in range(4)] == [(200, "near")] * 4
        near.close()
        assert [(await _who(port))[1] for _ in range(4)] == ["far"] * 4
    finally:
        await runtime.stop(drain_timeout=0.5)
        far.close()


async def test_reload_keeps_an_unchanged_pools_state(tmp_path):
    good, _ = await _scripted(_answer(200, "good"))
    dead = f"http://127.0.0.1:{free_port()}"
    runtime = await _gateway(tmp_path, f"{dead}, {_url(good)}",
                             "{outlier: {consecutive_connect_failures: 1, base_ejection: 60s}}")
    port = runtime.bound[0][1]
    try:
        await _who(port)
        await _who(port)
        before = runtime.gateway.target_pools
        ok, _ = await runtime.reload()
        assert ok and runtime.gateway.target_pools == before
        [pool] = before.values()
        assert not pool.targets[0].state.available(time.monotonic())
    finally:
        await runtime.stop(drain_timeout=0.5)
        good.close()
