"""JSON lines to a file (rotated by size) or to standard output.

Several processes (`serve --workers N`) may write one file: each delivery holds an exclusive `flock` on
`<path>.lock`, writes at the end of whatever file is at `path` now (another process may have rotated it) and
rotates under the same lock. An event the sink already wrote (a batch replayed from the spool after a crash
between the write and the spool's cursor) is skipped: the sink remembers the ids of its last `remember` events,
seeded from the end of the file when it opens it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bastion.audit.sinks import SinkError, event_id

_SEED_BYTES = 1024 * 1024  # the end of the file read at open, to remember what a previous process wrote


class FileSink:
    """Appends lines to `path`; before a write would pass `max_bytes` the file becomes `path.1` (`.1` becomes
    `.2` ..., up to `backups`), so a file never holds a partial event and never grows without bound."""

    def __init__(self, name: str, path: Path, max_bytes: int, backups: int, remember: int = 4096) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.remember = remember
        self.duplicates = 0  # events skipped because this file already has them
        self._file: BinaryIO | None = None
        self._size = 0
        self._lock: BinaryIO | None = None
        self._seen: OrderedDict[str, None] | None = None  # LRU of written event ids, bounded by `remember`

    def _open(self) -> BinaryIO:
        current = self._file
        if current is not None:
            # one fstat gives the inode to compare and the size (other processes append too)
            held = os.fstat(current.fileno())
            try:  # another process rotated the file: write to the new one
                moved = os.stat(self.path).st_ino != held.st_ino
            except FileNotFoundError:
                moved = True
            if not moved:
                self._size = held.st_size
                return current
            current.close()
            self._file = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open, closed in close()/rotate
        self._size = os.fstat(self._file.fileno()).st_size  # other processes append too
        return self._file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path.with_name(self.path.name + ".lock"), "ab")  # noqa: SIM115 - kept open
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)

    def _fresh(self, lines: list[bytes]) -> tuple[list[bytes], list[str]]:
        """The lines not written before, and their ids."""
        seen = self._seen
        if seen is None:
            seen = self._seen = OrderedDict()
            with contextlib.suppress(OSError):
                with open(self.path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(max(0, size - _SEED_BYTES))
                    tail = f.read().split(b"\n")[1:] if size > _SEED_BYTES else f.read().split(b"\n")
                for line in tail[-self.remember:]:
                    uid = event_id(line) if line else None
                    if uid is not None:
                        seen[uid] = None
        fresh: list[bytes] = []
        ids: list[str] = []
        for line in lines:
            uid = event_id(line)
            if uid is not None:
                if uid in seen:
                    self.duplicates += 1
                    continue
                ids.append(uid)
            fresh.append(line)
        return fresh, ids

    def _remember(self, ids: list[str]) -> None:
        seen = self._seen
        assert seen is not None
        for uid in ids:
            seen[uid] = None
        while len(seen) > self.remember:
            seen.popitem(last=False)

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    async def deliver(self, lines: list[bytes]) -> None:
        lines, ids = self._fresh(lines)
        if not lines:
            return
        try:
            with self._locked():
                self._write_all(lines)
        except OSError as exc:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise SinkError(f"{self.path}: {exc}") from exc
        self._remember(ids)

    def _write_all(self, lines: list[bytes]) -> None:
        self._open()
        chunk: list[bytes] = []
        size = self._size
        for line in lines:
            if size and size + len(line) > self.max_bytes:
                self._write(chunk)
                chunk = []
                self._rotate()
                self._open()
                size = 0
            chunk.append(line)
            size += len(line)
        self._write(chunk)

    def _write(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = b"".join(chunk)
        # opened by `_write_all` under the same lock: no other process can have rotated or appended since
        f = self._file if self._file is not None else self._open()
        f.write(data)
        f.flush()
        self._size += len(data)

    async def close(self) -> None:
        for f in (self._file, self._lock):
            if f is not None:
                f.close()
        self._file = self._lock = None


class StdoutSink:
    """JSON lines on standard output (a container's log collector picks them up)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def deliver(self, lines: list[bytes]) -> None:
        try:
            sys.stdout.write(b"".join(lines).decode())
            sys.stdout.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"stdout: {exc}") from exc

    async def close(self) -> None:
        return None
