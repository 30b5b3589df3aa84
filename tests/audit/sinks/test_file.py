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
