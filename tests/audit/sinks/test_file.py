"""The file sink: JSON lines, rotated by size without splitting an event, a bounded number of backups."""

from __future__ import annotations

import pytest

from bastion.audit.config import AuditSinkConfig
from bastion.audit.sinks import build_sink
from bastion.audit.sinks.file import FileSink


async def test_rotation_by_size_keeps_whole_lines_and_backups(tmp_path):
    path = tmp_path / "logs" / "audit.jsonl"
    sink = FileSink("f", path, max_bytes=100, backups=2)
    lines = [b'{"n":%03d,"pad":"xxxxxxxxxxxx"}\n' % i for i in range(20)]  # 31 bytes each: 3 per file
    for i in range(0, 20, 4):
        await sink.deliver(lines[i:i + 4])
    await sink.close()
    files = [path, path.with_name("audit.jsonl.1"), path.with_name("audit.jsonl.2")]
    assert not path.with_name("audit.jsonl.3").exists()
    for f in files:
        assert 0 < f.stat().st_size <= 100
        assert f.read_bytes().endswith(b"\n")
    kept = b"".join(f.read_bytes() for f in reversed(files))
    assert kept == b"".join(lines[-len(kept.splitlines()):])  # newest events, in order, none split


async def test_unwritable_path_is_a_sink_error(tmp_path):
    from bastion.audit.sinks import SinkError

    (tmp_path / "file").write_text("")
    sink = FileSink("f", tmp_path / "file" / "audit.jsonl", 1 << 20, 1)
    try:
        await sink.deliver([b"{}\n"])
    except SinkError:
        pass
    else:
        raise AssertionError("writing below a regular file succeeded")


def _event(uid: str) -> bytes:
    return b'{"metadata":{"uid":"%s"},"pad":"xxxxxxxx"}\n' % uid.encode()


async def test_a_replayed_event_is_written_once_even_by_a_new_process(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = FileSink("f", path, 1 << 20, 1)
    await first.deliver([_event("a"), _event("b")])
    await first.deliver([_event("b"), _event("c")])  # "b" replayed from the spool
    await first.close()
    restarted = FileSink("f", path, 1 << 20, 1)  # a worker restarted after kill -9 replays its spool's head
    await restarted.deliver([_event("c"), _event("d")])
    await restarted.close()
    assert path.read_bytes() == b"".join(_event(u) for u in "abcd")
    assert first.duplicates == 1 and restarted.duplicates == 1


async def test_two_processes_share_one_file_and_its_rotation(tmp_path):
    path = tmp_path / "audit.jsonl"
    one, two = FileSink("f", path, 400, 50), FileSink("f", path, 400, 50)  # ~9 events per file
    for i in range(0, 60, 2):
        await one.deliver([_event(f"one-{i}"), _event(f"one-{i + 1}")])
        await two.deliver([_event(f"two-{i}"), _event(f"two-{i + 1}")])
    await one.close()
    await two.close()
    files = [path, *sorted(tmp_path.glob("audit.jsonl.*[0-9]"))]
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == 120 and len(set(lines)) == 120  # nothing lost to a rotation race, nothing twice
    assert all(f.stat().st_size <= 400 for f in files)


async def test_the_remembered_ids_stay_within_their_bound_and_still_catch_a_replayed_batch(tmp_path):
    # the ids are only there to skip a replayed batch: a table of every id ever written would grow for as long
    # as it takes to fill (65,536 ids took 5.5 minutes at 200 events/s in the soak, 12 MiB of RSS)
    config = AuditSinkConfig(type="file", path=tmp_path / "audit.jsonl", batch_events=500)
    sink = build_sink(config, "f", tmp_path)
    assert isinstance(sink, FileSink) and sink.remember == 4096
    for start in range(0, 10_000, 500):
        await sink.deliver([_event(f"e{i}") for i in range(start, start + 500)])
    await sink.deliver([_event(f"e{i}") for i in range(9_500, 10_000)])  # the last batch, replayed
    assert sink.duplicates == 500 and sink._seen is not None and len(sink._seen) == 4096
    await sink.close()


@pytest.mark.parametrize(("batch_events", "remember"), [(1, 4096), (500, 4096), (5000, 10_000)])
def test_a_file_sink_remembers_two_batches_or_4096_ids(tmp_path, batch_events, remember):
    sink = build_sink(AuditSinkConfig(type="file", path=tmp_path / "a.jsonl", batch_events=batch_events), "f", tmp_path)
    assert isinstance(sink, FileSink) and sink.remember == remember


def _parsed_id(line: bytes) -> str | None:
    """What event_id answered before its fast path: the parsed document's metadata.uid / event.id."""
    import orjson

    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    meta = doc.get("metadata") if isinstance(doc, dict) and "metadata" in doc else \
        doc.get("event") if isinstance(doc, dict) else None
    uid = meta.get("uid", meta.get("id")) if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) else None


def test_event_id_reads_every_kind_of_event_as_parsing_would():
    import orjson

    from bastion.audit import events
    from bastion.audit.ecs import to_ecs
    from bastion.audit.sinks import event_id
    from bastion.context import ControlRecord, Deny, Identity, RequestContext

    marker = '"metadata":{"version":"1.3.0","uid":"forged"}'
    ctx = RequestContext(method="GET", raw_target="/x", path="/x", query="", client_ip="192.0.2.1",
                         headers=[("user-agent", marker)], request_id="r1", start=1_800_000_000.0)
    ctx.api, ctx.route = "shop", "get-x"
    ctx.identity = Identity("jwt", subject=marker, consumer="app")
    ctx.records.append(ControlRecord("identity", "allow", "p"))
    built = [
        events.request_event("u-1", ctx, 200, None, 0.001),
        events.request_event("u-2", ctx, 401, Deny(401, "jwt_expired", "p", log_detail=marker), 0.001),
        events.request_event("u-3", ctx, 403, Deny(403, "scope_missing", "p", log_detail=marker), 0.001),
        events.protocol_error_event("u-4", "192.0.2.1", "bad_framing", marker, "r2", 400),
        events.admin_event("u-5", "config.reload", "success", {"metadata": {"uid": "forged"}, "peer": "x"}),
        events.finding_event("u-6", detection="d", title=marker, description=marker, severity_id=3,
                             key_kind="ip", key="192.0.2.1", count=1, window=1.0, threshold=1, first_seen=0.0,
                             last_seen=0.0, ip="192.0.2.1", subject=None, consumer=None, api=None),
    ]
    lines = [orjson.dumps(event) for event in built] + [orjson.dumps(to_ecs(event)) for event in built]
    lines += [
        b'{"a":{"metadata":{"version":"1.3.0"}},' + lines[0][1:],  # a nested object before it: parsed
        b'{"class_uid":0,"metadata":{"uid":"other"}}',  # another product or version: parsed
        lines[0].replace(b'"uid":"u-1"', b'"uid":"u\\u002d1"'),  # an escape in the uid: parsed
        b"not json", b"[1,2]", b"",
    ]
    assert [event_id(line) for line in lines[:6]] == ["u-1", "u-2", "u-3", "u-4", "u-5", "u-6"]
    for line in lines:
        assert event_id(line) == _parsed_id(line), line


async def test_a_delivery_to_the_open_file_checks_it_with_one_stat_and_one_fstat(tmp_path, monkeypatch):
    import os

    from bastion.audit.sinks import file as file_module

    path = tmp_path / "audit.jsonl"
    sink = FileSink("f", path, 10_000, 2)
    await sink.deliver([_event("first")])  # opens the file
    calls: list[str] = []
    real_stat, real_fstat = os.stat, os.fstat
    monkeypatch.setattr(file_module.os, "stat", lambda *a, **k: calls.append("stat") or real_stat(*a, **k))
    monkeypatch.setattr(file_module.os, "fstat", lambda *a, **k: calls.append("fstat") or real_fstat(*a, **k))
    # another process appends between two deliveries: its bytes count towards the rotation
    room = 10_000 - len(_event("first")) - len(_event("second")) - len(_event("third")) - len(_event("fourth"))
    with path.open("ab") as other:
        other.write(b"x" * (room - 1) + b"\n")
    await sink.deliver([_event("second"), _event("third")])
    assert sorted(calls) == ["fstat", "stat"]
    monkeypatch.undo()
    await sink.deliver([_event("fourth"), _event("fifth")])  # the fourth fills the file to 10,000 bytes exactly
    await sink.close()
    assert path.with_name("audit.jsonl.1").stat().st_size == 10_000
    assert path.read_bytes() == _event("fifth")
