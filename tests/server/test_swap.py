"""Reload swaps the audit sinks, the spool and the state backend live: no event lost or repeated (counted by
event id at real collectors), blocks carried to the new backend, and a backend that does not answer refused."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

from bastion.state import open_state
from tests.audit.receivers import HttpCollector
from tests.e2e.test_audit_workers import ThreadedCollector
from tests.helpers import free_port, request, running_gateway
from tests.server.workers import gateway

CONFIG = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {address: 127.0.0.1, port: 0}
  state: memory
  audit:
    spool_dir: spool-a
    sinks: [{name: siem, type: http, url: "http://127.0.0.1:PORT_A/c", token_env: BASTION_TEST_HEC, timeout: 0.3s}]
classes:
  open: {identity: {required: false}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: "{upstream}"
    routes: [{name: items, path: /items, methods: [GET]}]
"""


async def _requests(port: int, count: int) -> set[str]:
    ids = set()
    for _ in range(count):
        status, headers, _ = await request(port, "GET", "/items")
        assert status == 200
        ids.add(headers["x-request-id"])
    return ids


async def _wait_for(collector: HttpCollector, ids: set[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ids <= {e["metadata"].get("correlation_uid") for e in collector.raw}:
            return
        await asyncio.sleep(0.1)


async def test_a_sink_moved_to_another_collector_and_spool_takes_its_backlog_along(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_TEST_HEC", "hec-token")
    port_a = free_port()  # collector A never answers: the first events wait in the spool
    collector_b = await HttpCollector(port=free_port()).start()
    try:
        async with running_gateway(tmp_path, CONFIG.replace("PORT_A", str(port_a))) as gw:
            port, admin = gw.bound[0][1], gw.admin_bound[1]
            before = await _requests(port, 30)
            await asyncio.sleep(0.5)
            assert (tmp_path / "spool-a" / "siem").is_dir()
            path = tmp_path / "bastion.yaml"
            path.write_text(path.read_text().replace(str(port_a), str(collector_b.port))
                            .replace("spool_dir: spool-a", "spool_dir: spool-b\n    spool_max_bytes: 64MiB")
                            .replace("timeout: 0.3s}]", "timeout: 0.3s}, {name: local, type: file, "
                                     "path: audit.jsonl}]"))
            status, _, body = await request(admin, "POST", "/reload")
            assert status == 200, body
            after = await _requests(port, 30)
            await _wait_for(collector_b, before | after)
            by_uid = Counter(e["metadata"]["uid"] for e in collector_b.raw)
            requests = Counter(e["metadata"].get("correlation_uid") for e in collector_b.raw
                               if e["metadata"].get("correlation_uid") in before | after)
            assert set(requests) == before | after, f"{len(before | after) - len(requests)} request events lost"
            assert max(by_uid.values()) == 1 and max(requests.values()) == 1  # nothing sent twice
            # the spool moved with its sink (a rename: the backlog was not copied or left behind)
            assert not (tmp_path / "spool-a" / "siem").exists() and (tmp_path / "spool-b" / "siem").is_dir()
            await asyncio.sleep(0.3)
            local = {line for line in (tmp_path / "audit.jsonl").read_text().splitlines()}
            assert sum(1 for rid in after if any(rid in line for line in local)) == len(after)  # the new sink
            assert not any(rid in line for rid in before for line in local)  # only what came after
    finally:
        await collector_b.stop()


async def test_a_removed_sink_delivers_its_backlog_then_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_TEST_HEC", "hec-token")
    collector = HttpCollector(port=free_port())  # down while the events are made
    async with running_gateway(tmp_path, CONFIG.replace("PORT_A", str(collector.port))) as gw:
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        ids = await _requests(port, 20)
        path = tmp_path / "bastion.yaml"
        path.write_text(path.read_text().replace(
            'sinks: [{name: siem, type: http, url: "http://127.0.0.1:PORT/c", token_env: BASTION_TEST_HEC, '
            'timeout: 0.3s}]'.replace("PORT", str(collector.port)), "sinks: [{name: local, path: audit.jsonl}]"))
        assert (await request(admin, "POST", "/reload"))[0] == 200
        await collector.start()  # the removed sink's receiver comes back: its backlog is still delivered
        try:
            await _wait_for(collector, ids)
            assert ids <= {e["metadata"].get("correlation_uid") for e in collector.raw}
            assert max(Counter(e["metadata"]["uid"] for e in collector.raw).values()) == 1
            later = await _requests(port, 5)
            await asyncio.sleep(0.5)
            assert not later & {e["metadata"].get("correlation_uid") for e in collector.raw}  # removed
        finally:
            await collector.stop()


async def test_the_state_backend_swaps_to_redis_with_its_blocks_and_a_dead_one_is_refused(tmp_path, redis_server):
    config = CONFIG.replace("  audit:\n    spool_dir: spool-a\n", "  audit:\n").replace(
        '    sinks: [{name: siem, type: http, url: "http://127.0.0.1:PORT_A/c", token_env: BASTION_TEST_HEC, '
        'timeout: 0.3s}]\n', "    sinks: []\n").replace(
        "open: {identity: {required: false}}", "open: {identity: {required: false}, traffic: {rate_limits: "
        "[{name: per-client, limit: 5, window: 1m, key: client_ip}]}}")
    async with running_gateway(tmp_path, config) as gw:
        port, admin = gw.bound[0][1], gw.admin_bound[1]
        statuses = [(await request(port, "GET", "/items"))[0] for _ in range(3)]
        assert statuses == [200] * 3
        assert (await request(admin, "POST", "/blocks", body=b'{"kind": "ip", "key": "203.0.113.9", '
                              b'"seconds": 600}', headers={"content-type": "application/json"}))[0] == 200
        path = tmp_path / "bastion.yaml"
        dead = f"redis://127.0.0.1:{free_port()}/0"
        path.write_text(path.read_text().replace("state: memory", f"state: {dead}"))
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 422 and b"gateway.state: the new backend does not answer" in body
        assert gw.services.state.name == "memory"  # still the old backend, still counting
        path.write_text(path.read_text().replace(dead, redis_server.url))
        proc = await asyncio.create_subprocess_exec(  # asked beforehand, the running gateway says what swaps
            sys.executable, "-m", "bastion", "validate", "-c", str(path), "--against", f"http://127.0.0.1:{admin}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0 and b'"applies_live":true' in out and b'"swaps":["gateway.state"]' in out, err
        status, _, body = await request(admin, "POST", "/reload")
        assert status == 200, body
        assert gw.services.state.name == "redis"
        statuses = [(await request(port, "GET", "/items"))[0] for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3  # the limit now counts in Redis, from a fresh window
        redis = open_state(redis_server.url)
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and await redis.is_blocked("ip", "203.0.113.9") is None:
                await asyncio.sleep(0.05)
            assert await redis.is_blocked("ip", "203.0.113.9") is not None  # carried over from memory
        finally:
            await redis.close()


def test_workers_swap_sink_and_state_together_with_no_event_lost_or_repeated(tmp_path, monkeypatch,
                                                                           redis_server):
    monkeypatch.setenv("BASTION_TEST_HEC", "hec-token")
    down = free_port()
    collector = ThreadedCollector()
    try:
        audit = (f"audit: {{sinks: [{{name: siem, type: http, url: 'http://127.0.0.1:{down}/c', "
                 "token_env: BASTION_TEST_HEC, timeout: 0.3s}]}\n")
        with gateway(tmp_path, extra_gateway=audit) as gw:
            gw.wait_linked()
            ids = set()
            for _ in range(60):
                status, headers, _ = _get(gw)
                assert status == 200
                ids.add(headers["x-request-id"])
            assert gw.post_admin("/blocks", {"kind": "ip", "key": "203.0.113.7", "seconds": 600})[0] == 200
            collector.start()
            original = gw.path.read_text()
            dead = f"redis://127.0.0.1:{free_port()}/0"
            gw.path.write_text(original.replace("limits: {drain_timeout: 10s}",
                                                f"limits: {{drain_timeout: 10s}}\n  state: {dead}"))
            status, answer = gw.post_admin("/reload")  # a backend nobody answers on: refused, nothing changes
            assert status == 422 and "gateway.state" in answer["message"], answer
            assert {w["generation"] for w in gw.workers_info()} == {1}
            gw.path.write_text(original.replace(str(down), str(collector.collector.port)).replace(
                "limits: {drain_timeout: 10s}", f"limits: {{drain_timeout: 10s}}\n  state: {redis_server.url}"))
            status, answer = gw.post_admin("/reload")
            assert status == 200 and answer["consistent"] and answer["generation"] == 2, answer
            for _ in range(60):
                status, headers, _ = _get(gw)
                assert status == 200
                ids.add(headers["x-request-id"])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if ids <= {e["metadata"].get("correlation_uid") for e in collector.events()}:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # anything sent twice would have arrived by now
            events = collector.events()
            by_uid = Counter(e["metadata"]["uid"] for e in events)
            got = {e["metadata"].get("correlation_uid") for e in events} & ids
            assert len(got) == len(ids), f"{len(ids) - len(got)} request events lost"
            assert max(by_uid.values()) == 1, f"{sum(c - 1 for c in by_uid.values())} duplicates"
            blocked = asyncio.run(_is_blocked(redis_server.url, "ip", "203.0.113.7"))
            assert blocked is not None  # the embedded state's block moved to Redis with the reload
    finally:
        collector.close()


def _get(gw):
    from tests.helpers import http_get

    return http_get(f"http://127.0.0.1:{gw.port}/items")


async def _is_blocked(url: str, kind: str, key: str) -> float | None:
    redis = open_state(url)
    try:
        return await redis.is_blocked(kind, key)
    finally:
        await redis.close()


async def test_tracing_turned_on_then_renamed_by_reload(tmp_path):
    from tests.test_tracing import Collector

    collector = Collector()
    otlp = collector.start()
    config = CONFIG.replace("  audit:\n    spool_dir: spool-a\n", "  audit:\n").replace(
        '    sinks: [{name: siem, type: http, url: "http://127.0.0.1:PORT_A/c", token_env: BASTION_TEST_HEC, '
        'timeout: 0.3s}]\n', "    sinks: []\n")
    try:
        async with running_gateway(tmp_path, config) as gw:
            port, admin = gw.bound[0][1], gw.admin_bound[1]
            assert (await request(port, "GET", "/items"))[0] == 200
            path = tmp_path / "bastion.yaml"
            tracing = (f'  tracing: {{enabled: true, endpoint: "http://127.0.0.1:{otlp}/v1/traces", '
                       'export_interval: 100ms, service_name: gw-a}\n')
            path.write_text(path.read_text().replace("  state: memory\n", "  state: memory\n" + tracing))
            assert (await request(admin, "POST", "/reload"))[0] == 200
            first = (await request(port, "GET", "/items"))[1]["x-request-id"]
            path.write_text(path.read_text().replace("service_name: gw-a", "service_name: gw-b"))
            assert (await request(admin, "POST", "/reload"))[0] == 200  # the gw-a tracer is flushed and closed
            second = (await request(port, "GET", "/items"))[1]["x-request-id"]
            await asyncio.sleep(0.5)
            services = {span["service"] for span in collector.spans if span["kind"] == 2}  # SERVER spans
            assert services == {"gw-a", "gw-b"}, collector.spans
            assert first != second
    finally:
        collector.close()
