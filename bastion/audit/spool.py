"""A sink's disk spool: append-only segment files of JSON lines and a cursor, so undelivered events survive
an outage (and a restart) and are replayed in the order they were written.

```
<spool_dir>/<sink>/000000000001.seg   one event per line, appended
<spool_dir>/<sink>/000000000002.seg   a new segment once the current one passes `segment_bytes`
<spool_dir>/<sink>/cursor             "<segment> <offset>": the first byte not yet delivered
```
A segment is deleted once the cursor has passed it. The cursor is replaced atomically (write + rename), after
the batch it covers was delivered: a crash in between replays that batch (at least once; receivers de-duplicate
by `metadata.uid`). A torn last line (a crash mid-append) is cut off when the spool is opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO


class Spool:
    """The spool of one sink. Synchronous and small: appends go to the page cache (no fsync per event)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.events = 0  # spooled, not yet delivered
        self.bytes = 0
        self._writer: BinaryIO | None = None
        self._write_seq = 0
        self._write_size = 0
        self._cursor = (1, 0)
        directory.mkdir(parents=True, exist_ok=True)
        self._recover()

    # ---- opening ------------------------------------------------------------------------------------------

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.seg"

    def _recover(self) -> None:
        segments = self._segments()
        cursor_file = self.directory / "cursor"
        if cursor_file.exists():
            seq_text, _, offset_text = cursor_file.read_text().partition(" ")
            self._cursor = (int(seq_text), int(offset_text or 0))
        elif segments:
            self._cursor = (segments[0], 0)
        for seq in segments:
            if seq < self._cursor[0]:
                self._path(seq).unlink(missing_ok=True)
        segments = [s for s in segments if s >= self._cursor[0]]
        if segments:
            last = self._path(segments[-1])
            data = last.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):  # a torn append: the line was never acknowledged to anyone
                with open(last, "r+b") as f:
                    f.truncate(cut)
        for seq in segments:
            data = self._path(seq).read_bytes()
            start = self._cursor[1] if seq == self._cursor[0] else 0
            self.events += data.count(b"\n", start)
            self.bytes += len(data) - start
        self._write_seq = segments[-1] if segments else self._cursor[0]
        if not segments:
            self._cursor = (self._write_seq, 0)

    # ---- writing ------------------------------------------------------------------------------------------

    def append(self, lines: list[bytes]) -> int:
        """Spool `lines` (each ending in a newline) in order. Returns how many could not be written (full)."""
        if not lines:
            return 0
        data = b"".join(lines)
        if self.bytes + len(data) > self.max_bytes:
            # keep as many whole events as fit, in order; the rest is the loss the caller counts
            room = self.max_bytes - self.bytes
            kept: list[bytes] = []
            for line in lines:
                if len(line) > room:
                    break
                kept.append(line)
                room -= len(line)
            written = self._write(kept) if kept else 0
            return len(lines) - written
        return len(lines) - self._write(lines)

    def _write(self, lines: list[bytes]) -> int:
        data = b"".join(lines)
        try:
            writer = self._open_writer()
            writer.write(data)
            writer.flush()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
                raise
            self._abandon_partial()
            return 0
        self._write_size += len(data)
        self.events += len(lines)
        self.bytes += len(data)
        return len(lines)

    def _open_writer(self) -> BinaryIO:
        if self._writer is not None and self._write_size >= self.segment_bytes:
            self._writer.close()
            self._writer = None
            self._write_seq += 1
        if self._writer is None:
            path = self._path(self._write_seq)
            self._writer = open(path, "ab")  # noqa: SIM115 - held open across appends, closed in close()
            self._write_size = self._writer.tell()
        return self._writer

    def _abandon_partial(self) -> None:
        """After a failed write, cut the segment back to what was spooled before it (no torn line)."""
        if self._writer is None:
            return
        with contextlib.suppress(OSError):
            self._writer.close()
        self._writer = None
        with contextlib.suppress(OSError):
            os.truncate(self._path(self._write_seq), self._write_size)

    # ---- reading ------------------------------------------------------------------------------------------

    def read(self, max_events: int, max_bytes: int) -> tuple[list[bytes], tuple[int, int]]:
        """Up to `max_events` lines from the cursor, and the position after them (for `commit`)."""
        seq, offset = self._cursor
        lines: list[bytes] = []
        size = 0
        while len(lines) < max_events and seq <= self._write_seq:
            path = self._path(seq)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    want = max(max_bytes - size, 65536)
                    chunk = f.read(want)
                    if len(chunk) == want and b"\n" not in chunk:  # one event larger than a read
                        chunk += f.readline()
            except FileNotFoundError:
                chunk = b""
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                if seq == self._write_seq:
                    break
                seq, offset = seq + 1, 0
                continue
            for line in chunk[:end].splitlines(keepends=True):
                if len(lines) >= max_events or (lines and size + len(line) > max_bytes):
                    return lines, (seq, offset)
                lines.append(line)
                size += len(line)
                offset += len(line)
        return lines, (seq, offset)

    def commit(self, position: tuple[int, int], count: int) -> None:
        """`count` events up to `position` were delivered: move the cursor, delete finished segments."""
        old_seq = self._cursor[0]
        delivered = self._distance(position)
        self._cursor = position
        self.events = max(0, self.events - count)
        self.bytes = max(0, self.bytes - delivered)
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{position[0]} {position[1]}")
        os.replace(tmp, self.directory / "cursor")
        for seq in range(old_seq, position[0]):
            self._path(seq).unlink(missing_ok=True)

    def _distance(self, position: tuple[int, int]) -> int:
        seq, offset = self._cursor
        if position[0] == seq:
            return position[1] - offset
        total = self._size(seq) - offset
        for middle in range(seq + 1, position[0]):
            total += self._size(middle)
        return total + position[1]

    def _size(self, seq: int) -> int:
        try:
            return self._path(seq).stat().st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
