"""Delivery without loss: real receivers are stopped under load and every event arrives exactly once after
they return (de-duplicated by metadata.uid, no gaps), in order; a full spool is counted and alerted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from bastion.audit.config import TlsClientConfig
from bastion.audit.delivery import Channel
from bastion.audit.events import request_event
from bastion.audit.log import AuditLog, SinkSpec
from bastion.audit.sinks import SinkError, client_ssl
from bastion.audit.sinks.file import FileSink
from bastion.audit.sinks.http import HttpSink
from bastion.audit.sinks.syslog import SyslogSink
from bastion.audit.spool import Spool
from tests.audit.helpers import ALICE, context
from tests.audit.receivers import HttpCollector, Rsyslog, exactly_once


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def emit(audit: AuditLog, count: int, uids: list[str], *, per_tick: int = 50, tick: float = 0.02) -> None:
    """`count` request events at a steady rate (the load the receivers see)."""
    for i in range(count):
        uid = audit.ids.new()
        audit.emit(request_event(uid, context(identity=ALICE, request_id=f"r{len(uids)}"), 200, None, 0.001))
        uids.append(uid)
        if i % per_tick == per_tick - 1:
            await asyncio.sleep(tick)


async def outage_run(audit: AuditLog, stop: Callable[[], object], start: Callable[[], object],
                     received: Callable[[], list[dict]]) -> tuple[int, list[str], list[str]]:
    uids: list[str] = []
    await audit.start()
    await emit(audit, 1000, uids)
    await wait_until(lambda: len(received()) >= 500)
    result = stop()
    if asyncio.iscoroutine(result):
        await result
    await emit(audit, 2000, uids)  # ~1 s of load against a dead receiver ...
    await asyncio.sleep(1.0)  # ... and a while longer
    assert audit.channels[0].spool.events > 0  # it spilled to disk
    result = start()
    if asyncio.iscoroutine(result):
        await result
    await emit(audit, 1000, uids)
    await wait_until(lambda: len({e["metadata"]["uid"] for e in received()}) >= len(uids))
    await audit.close()
    duplicates, unique = exactly_once(received(), uids)
    return duplicates, unique, uids


async def test_syslog_tcp_outage_rsyslog(tmp_path: Path):
    rsyslog = Rsyslog(tmp_path / "rsyslog").start()
    sink = SyslogSink("siem", "127.0.0.1", rsyslog.port, timeout=1.0, resend_window=3.0)
    audit = AuditLog([SinkSpec(sink, memory_events=200)], spool_dir=tmp_path / "spool")
    try:
        duplicates, unique, uids = await outage_run(audit, rsyslog.stop, rsyslog.start, rsyslog.messages)
    finally:
        rsyslog.stop()
    assert unique == uids  # first arrivals in emission order: no gaps, no reordering
    assert audit.delivered >= len(uids) and audit.dropped == 0
    # plain TCP syslog is at least once: what was written just before the outage is sent again
    assert duplicates <= sink.resent


async def test_http_outage_and_refusals(tmp_path: Path):
    collector = await HttpCollector().start()
    # the default 5 s answer timeout: a batch the collector took but answered too late for the sink is rightly sent
    # again (same idempotency key), which a loaded machine once did at 1 s; the outage here is a refused connect
    sink = HttpSink("hec", collector.url, token="hec-token")
    audit = AuditLog([SinkSpec(sink, memory_events=200, batch_events=100)], spool_dir=tmp_path / "spool")
    port = collector.port

    async def restart() -> None:
        collector.port = port
        collector.status = 503  # first it answers, but refuses ...
        await collector.start()
        await asyncio.sleep(0.5)
        collector.status = 200  # ... then it takes events again

    try:
        duplicates, unique, uids = await outage_run(audit, collector.stop, restart, lambda: collector.raw)
    finally:
        await collector.stop()
    assert unique == uids
    assert duplicates == 0  # an HTTP 2xx is an acknowledgement: nothing is sent twice
    assert collector.unauthorised == 0


async def test_spool_survives_a_restart_of_the_gateway(tmp_path: Path):
    collector = HttpCollector()
    await collector.start()
    port = collector.port
    await collector.stop()  # the SIEM is down while the gateway runs and stops
    uids: list[str] = []
    first = AuditLog([SinkSpec(HttpSink("hec", f"http://127.0.0.1:{port}/c", token="hec-token", timeout=0.5))],
                     spool_dir=tmp_path / "spool")
    await first.start()
    await emit(first, 300, uids)
    await first.close(timeout=0.2)
    assert first.channels[0].spool.events == 300
    collector.port = port
    await collector.start()
    second = AuditLog([SinkSpec(HttpSink("hec", f"http://127.0.0.1:{port}/c", token="hec-token"))],
                      spool_dir=tmp_path / "spool")
    await second.start()  # replays what the first run spooled
    await emit(second, 10, uids)
    await wait_until(lambda: len(collector.raw) >= 310)
    await second.close()
    await collector.stop()
    duplicates, unique = exactly_once(collector.raw, uids)
    assert unique == uids and duplicates == 0


async def test_full_spool_loses_counts_and_alerts(tmp_path: Path):
    dead = SyslogSink("dead", "127.0.0.1", 9, timeout=0.2)  # nothing listens on the discard port
    alerts = FileSink("alerts", tmp_path / "alerts.jsonl", 1 << 30, 0)
    audit = AuditLog([SinkSpec(dead, memory_events=10), SinkSpec(alerts)], spool_dir=tmp_path / "spool",
                     spool_max_bytes=20_000)
    await audit.start()
    uids: list[str] = []
    await emit(audit, 200, uids)
    await asyncio.sleep(1.2)  # the loss report runs every second
    lost_before_report = audit.channels[0].dropped
    assert lost_before_report > 0
    await audit.close(timeout=0.2)
    channel = audit.channels[0]
    assert audit.metrics.registry.get_sample_value("bastion_audit_events_dropped_total",
                                                   {"sink": "dead", "reason": "spool_full"}) == channel.dropped
    events = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    findings = [e for e in events if e["class_uid"] == 2004]
    assert findings and findings[0]["unmapped"]["bastion"]["detection"] == "audit_events_lost"
    assert findings[0]["unmapped"]["bastion"]["count"] >= lost_before_report - 1
    # every event offered to the dead sink (the 200 and the loss alerts) is either spooled or counted as lost
    assert channel.spool.events + channel.dropped == 200 + len(findings)
    assert sum(1 for e in events if e["class_uid"] == 6003) == 200  # the other sink lost nothing


class Flaky:
    """A sink that fails on demand and is slow on demand (to catch a batch in flight when memory overflows)."""

    name = "flaky"

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def deliver(self, lines: list[bytes]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise SinkError("down")
        self.got += lines

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("fail", [False, True])
async def test_batch_in_flight_during_overflow_is_neither_lost_nor_duplicated(tmp_path: Path, fail: bool):
    sink = Flaky()
    spool = Spool(tmp_path / f"s{fail}", 1 << 20)
    channel = Channel(sink, spool, memory_events=5, batch_events=3)
    channel.start()
    sink.gate = asyncio.Event()
    lines = [b"%d\n" % i for i in range(40)]
    channel.offer(lines[0])
    await asyncio.sleep(0.01)  # batch [0] is in flight, held at the gate
    for line in lines[1:]:
        channel.offer(line)  # memory overflows: the in-flight batch is spooled first
    sink.fail = fail
    sink.gate.set()
    await asyncio.sleep(0.1)
    sink.fail = False
    await wait_until(lambda: spool.events == 0 and not channel.memory, 5)
    await channel.close()
    assert sink.got == lines, fail


async def test_syslog_over_tls_to_rsyslog(tmp_path: Path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    rsyslog = Rsyslog(tmp_path / "rsyslog", tls=paths).start()
    context_ = client_ssl(TlsClientConfig(ca=paths[0]), tmp_path)
    sink = SyslogSink("tls", "127.0.0.1", rsyslog.port, context=context_, timeout=2.0)
    audit = AuditLog([SinkSpec(sink)], spool_dir=tmp_path / "spool")
    uids: list[str] = []
    try:
        await audit.start()
        await emit(audit, 200, uids)
        await wait_until(lambda: len(rsyslog.messages()) >= 200)
        await audit.close()
    finally:
        rsyslog.stop()
    assert exactly_once(rsyslog.messages(), uids) == (0, uids)
    # a receiver that does not chain to the configured CA is refused (no event leaves unprotected)
    untrusted = SyslogSink("tls", "127.0.0.1", rsyslog.port, context=client_ssl(None, tmp_path), timeout=1.0)
    rsyslog.start()
    try:
        try:
            await untrusted.deliver([b"{}\n"])
        except SinkError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower()
        else:
            raise AssertionError("an untrusted receiver was accepted")
    finally:
        await untrusted.close()
        rsyslog.stop()


async def test_a_request_is_queued_as_a_record_and_written_as_its_full_event(tmp_path: Path) -> None:
    from tests.audit.helpers import auth_deny

    path = tmp_path / "audit.jsonl"
    audit = AuditLog([SinkSpec(FileSink("file", path, 1 << 20, 0))], spool_dir=tmp_path / "spool")
    await audit.start()
    allowed = context(identity=ALICE)
    record, refused = auth_deny("jwt_expired")
    denied = context(records=(record,), request_id="req-2")
    audit.request(allowed, 200, None, 0.0012, ("exc-1",), 200)
    audit.request(denied, 401, refused, 0.0003)
    assert all(isinstance(item, tuple) for item in audit._pending)  # the request paid for a tuple, no document
    uids = [item[0] for item in audit._pending if isinstance(item, tuple)]
    await audit.close()
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert written == [request_event(uids[0], allowed, 200, None, 0.0012, ("exc-1",), 200),
                       request_event(uids[1], denied, 401, refused, 0.0003)]
    assert [event["class_uid"] for event in written] == [6003, 3002]


async def test_a_batch_of_request_events_is_rendered_one_at_a_time(tmp_path: Path) -> None:
    """Each event is rendered, serialised for every format and dropped before the next: a batch rendered at once
    held every event's dicts and lists at once and ran the cyclic GC's young collection every ~40 events."""
    import gc

    from bastion.audit.ecs import to_ecs

    ocsf, ecs = tmp_path / "ocsf.jsonl", tmp_path / "ecs.jsonl"
    audit = AuditLog([SinkSpec(FileSink("ocsf", ocsf, 1 << 24, 0)), SinkSpec(FileSink("ecs", ecs, 1 << 24, 0),
                                                                              format="ecs")],
                     spool_dir=tmp_path / "spool", queue_size=10_000)
    await audit.start()
    contexts = [context(identity=ALICE, request_id=f"req-{n}") for n in range(300)]
    for ctx in contexts:
        audit.request(ctx, 200, None, 0.001, (), 200)
    uids = [item[0] for item in audit._pending if isinstance(item, tuple)]
    collections = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            collections.append(1)

    gc.collect()
    gc.callbacks.append(count)
    try:
        audit._dispatch()
    finally:
        gc.callbacks.remove(count)
    await audit.close()
    assert len(collections) <= 2  # rendering the batch at once: 7 for these 300 events
    expected = [request_event(uid, ctx, 200, None, 0.001, (), 200) for uid, ctx in zip(uids, contexts, strict=True)]
    assert [json.loads(line) for line in ocsf.read_text().splitlines()] == expected  # in order, every format
    assert [json.loads(line) for line in ecs.read_text().splitlines()] == [
        json.loads(json.dumps(to_ecs(event), default=str)) for event in expected]
