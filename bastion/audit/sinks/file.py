"""JSON lines to a file (rotated by size) or to standard output."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

from bastion.audit.sinks import SinkError


class FileSink:
    """Appends lines to `path`; before a write would pass `max_bytes` the file becomes `path.1` (`.1` becomes
    `.2` ..., up to `backups`), so a file never holds a partial event and never grows without bound."""

    def __init__(self, name: str, path: Path, max_bytes: int, backups: int) -> None:
        self.name = name
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None
        self._size = 0

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open, closed in close()/rotate
            self._size = self._file.tell()
        return self._file

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
        try:
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
        except OSError as exc:
            if self._file is not None:
                self._file.close()
                self._file = None
            raise SinkError(f"{self.path}: {exc}") from exc

    def _write(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = b"".join(chunk)
        f = self._open()
        f.write(data)
        f.flush()
        self._size += len(data)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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
