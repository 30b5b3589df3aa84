"""In-memory transports for the server's protocols: conversations without sockets (bench/micro_core.py and
fuzz/http.py drive the server with the same transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class MemoryTransport(asyncio.Transport):
    """What the connection writes, and whether it paused reading or closed. With `on_write`, each write goes to
    that callback instead of `out` (the benchmark answers from it; the fuzz target collects)."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None,
                 peer: tuple[str, int] = ("192.0.2.7", 50000)) -> None:
        super().__init__()
        self.on_write = on_write
        self.peer = peer
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": self.peer, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        if self.on_write is None:
            self.out += data
        else:
            self.on_write(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data
