"""The file sink: JSON lines, rotated by size without splitting an event, a bounded number of backups."""

from __future__ import annotations

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
