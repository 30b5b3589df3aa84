"""The disk spool: order, cursor, segments, recovery after a crash, and its size cap."""

from __future__ import annotations

from bastion.audit.spool import Spool


def _lines(start: int, count: int) -> list[bytes]:
    return [b'{"n":%d}\n' % i for i in range(start, start + count)]


def test_append_read_commit_in_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    assert spool.append(_lines(0, 50)) == 0
    assert spool.events == 50
    seen: list[bytes] = []
    while spool.events:
        lines, position = spool.read(7, 1 << 20)
        seen += lines
        spool.commit(position, len(lines))
    assert seen == _lines(0, 50)
    assert spool.bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # finished segments are deleted
    spool.close()


def test_reopen_resumes_at_the_cursor_and_cuts_a_torn_line(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    spool.append(_lines(0, 20))
    lines, position = spool.read(5, 1 << 20)
    spool.commit(position, len(lines))
    spool.close()
    last = sorted(tmp_path.glob("*.seg"))[-1]
    with open(last, "ab") as f:
        f.write(b'{"n":99')  # a crash in the middle of an append
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    assert again.events == 15
    lines, position = again.read(100, 1 << 20)
    assert lines == _lines(5, 15)
    again.append(_lines(20, 2))
    again.commit(position, len(lines))
    assert again.read(100, 1 << 20)[0] == _lines(20, 2)
    again.close()


def test_size_cap_keeps_what_fits_and_reports_the_rest(tmp_path):
    line = b'{"n":0}\n'
    spool = Spool(tmp_path, max_bytes=len(line) * 10, segment_bytes=1 << 20)
    assert spool.append([line] * 8) == 0
    assert spool.append([line] * 5) == 3
    assert spool.events == 10
    spool.close()


def test_read_respects_the_byte_budget_but_returns_at_least_one_event(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 24)
    big = b'{"pad":"' + b"x" * 200_000 + b'"}\n'
    spool.append([big, big, b"{}\n"])
    lines, position = spool.read(10, 1000)
    assert lines == [big]
    spool.commit(position, 1)
    lines, _ = spool.read(10, 1 << 24)
    assert lines == [big, b"{}\n"]
    spool.close()
