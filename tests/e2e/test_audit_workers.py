"""The issue's measurement, as a test: an HTTP collector down while `--workers 2` serves N requests, then back.
Counted by event id: every request's event arrives exactly once, and the metrics say what happened."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from tests.audit.receivers import HttpCollector
from tests.helpers import free_port, http_get
from tests.server.workers import gateway

N = 300


class ThreadedCollector:
    """The asyncio HttpCollector on a loop of its own thread, so a test can drive blocking clients."""

    def __init__(self) -> None:
        self.collector = HttpCollector(port=free_port())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        self.run(self.collector.start())

    def stop(self) -> None:
        self.run(self.collector.stop())

    def events(self) -> list[dict]:
        return self.run(_copy(self.collector.raw))

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _copy(items: list) -> list:
    return list(items)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_collector_down_then_back_loses_nothing_and_repeats_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_TEST_HEC", "hec-token")
    collector = ThreadedCollector()
    try:
        audit = (f"audit: {{sinks: [{{type: http, url: 'http://127.0.0.1:{collector.collector.port}/c', "
                 "token_env: BASTION_TEST_HEC, timeout: 0.5s}]}\n")
        with gateway(tmp_path, extra_gateway=audit) as gw:  # the collector is down from the start
            ids = set()
            for _ in range(N):
                status, headers, _ = http_get(f"http://127.0.0.1:{gw.port}/items")
                assert status == 200
                ids.add(headers["x-request-id"])
            deadline = time.monotonic() + 10  # the workers refresh their gauges every second (later when loaded)
            while True:
                metrics = gw.admin("/metrics")[1].decode()
                if _metric(metrics, "bastion_audit_spool_events") >= N or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert _metric(metrics, "bastion_audit_spool_events") >= N  # the backlog is visible
            collector.start()
            deadline = time.monotonic() + 20
            got: Counter[str] = Counter()
            while time.monotonic() < deadline:
                events = collector.events()
                got = Counter(e["metadata"]["uid"] for e in events
                              if e["metadata"].get("correlation_uid") in ids)
                if len(got) >= N:
                    break
                time.sleep(0.2)
            deadline = time.monotonic() + 10  # retries back off up to 2 s; gauges refresh every second
            while time.monotonic() < deadline:
                time.sleep(0.5)
                metrics = gw.admin("/metrics")[1].decode()
                if _metric(metrics, "bastion_audit_spool_events") == 0 and \
                        _metric(metrics, "bastion_audit_queue_depth") == 0:
                    break
            time.sleep(1.0)  # anything sent twice would have arrived by now
            events = collector.events()
            by_uid = Counter(e["metadata"]["uid"] for e in events)
            requests = {e["metadata"].get("correlation_uid") for e in events} & ids
            assert len(requests) == N, f"{N - len(requests)} request events lost"
            assert max(by_uid.values()) == 1, f"{sum(c - 1 for c in by_uid.values())} duplicates"
            metrics = gw.admin("/metrics")[1].decode()
            assert _metric(metrics, "bastion_audit_spool_events") == 0
            assert _metric(metrics, "bastion_audit_events_delivered_total") == len(by_uid)  # the truth
            assert _metric(metrics, "bastion_audit_events_dropped_total") == 0
    finally:
        collector.close()
