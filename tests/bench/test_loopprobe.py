"""The loop probe: names of callbacks, what it counts for one callback, and a probed gateway serving requests."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import loopprobe
from tests.helpers import free_port, process_config, upstream_server, wait_http

REPO = Path(__file__).resolve().parents[2]


class Thing:
    def method(self) -> None:
        pass


def function() -> None:
    pass


async def _serving() -> None:
    await asyncio.sleep(0)


async def test_callback_names():
    task = asyncio.ensure_future(_serving())
    names = {loopprobe.callback_name(Thing().method), loopprobe.callback_name(function),
             loopprobe.callback_name(task.cancel)}
    await task
    assert names == {"Thing.method", "function", "task:_serving"}


@pytest.fixture
def stats(monkeypatch):
    fresh = loopprobe.Stats()
    monkeypatch.setattr(loopprobe, "STATS", fresh)
    return fresh


def test_a_callback_is_timed_in_cpu_and_one_that_sleeps_is_reported_as_blocking(stats):
    def busy() -> None:
        end = time.thread_time() + 0.003
        while time.thread_time() < end:
            pass

    loopprobe.timed(busy, "busy")()
    loopprobe.timed(lambda: time.sleep(0.02), "sleeper")()
    summary = stats.summary()
    rows = {row["name"]: row for row in summary["by_name_longest_first"]}
    assert rows["busy"]["max_ms"] >= 3.0  # its CPU
    assert rows["sleeper"]["max_ms"] < 5.0  # sleeping costs no CPU...
    assert set(summary["blocking_callbacks"]) == {"sleeper"}  # ...but the loop stood still
    assert summary["blocking_callbacks"]["sleeper"]["wall_ms_max"] >= 19.0
    assert [c["name"] for c in summary["longest_callbacks"]] == ["busy"]  # 1 ms of CPU or more


def test_a_callback_run_inside_another_is_counted_once(stats):
    inner = loopprobe.timed(function, "inner")
    loopprobe.timed(lambda: inner(), "outer")()
    assert [row["name"] for row in stats.summary()["by_name_longest_first"]] == ["outer"]


async def test_a_probed_gateway_reports_every_request(tmp_path):
    port, admin = free_port(), free_port()
    out = tmp_path / "probe.json"
    async with upstream_server() as upstream:
        config = tmp_path / "bastion.yaml"
        config.write_text(process_config(port, admin, upstream))
        # the form bench/run.py uses: `<--bastion command> serve -c PATH`
        log = tmp_path / "probe.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "loopprobe.py"), "--out", str(out),
                                     "serve", "-c", str(config)], cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/readyz")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(20):  # keep-alive, one at a time
                writer.write(b"GET /items HTTP/1.1\r\nHost: shop\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()
    summary = json.loads(out.read_text())
    # each request's wait, once, and the readiness checks' (more than one if the first found it not ready yet)
    assert 21 <= summary["request_wait_cpu_ms"]["n"] <= 25
    assert summary["wait_read_to_upstream_write_ms"]["n"] == 20  # the admin API has no upstream
    assert sum(summary["task_steps_before_upstream"].values()) == 20
    names = {row["name"]: row["count"] for row in summary["by_name_longest_first"]}
    assert names["UpstreamConnection.data_received"] >= 20
    assert names["Http1Connection.data_received"] >= 21  # the 20 requests and the readiness check
    # nothing on the request path sleeps in the kernel: a blocking call there would show on most of the 20 requests;
    # on a loaded machine one callback may be descheduled waiting for a page or a lock in the allocator, which counts as a sleep too
    blocked = sum(row["count"] for row in summary["blocking_callbacks"].values())
    assert blocked <= 2, summary["blocking_callbacks"]
