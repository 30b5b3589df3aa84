"""In-memory transports for the server's protocols: conversations without sockets (bench/micro_core.py drives
the gateway the same way)."""

from __future__ import annotations

import asyncio


class MemoryTransport(asyncio.Transport):
    """What the connection writes, and whether it paused reading or closed."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("192.0.2.7", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.out += data

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
