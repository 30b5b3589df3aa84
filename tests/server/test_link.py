"""The worker-supervisor link: calls both ways, errors as values, bounded frames, closing."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest

from bastion.server.link import MAX_FRAME, Link, LinkClosed, RemoteError, connect


async def _pair(tmp_path: Path, handler: Any) -> tuple[Link, list[Link], asyncio.Server]:
    accepted: list[Link] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer, handler)
        accepted.append(link)
        link.start()

    server = await asyncio.start_unix_server(accept, str(tmp_path / "l.sock"))
    client = await connect(str(tmp_path / "l.sock"), handler)
    return client, accepted, server


async def test_calls_both_ways_and_errors_as_values(tmp_path: Path) -> None:
    async def handler(op: str, args: list[Any]) -> Any:
        if op == "add":
            return sum(args)
        raise KeyError(op)

    client, accepted, server = await _pair(tmp_path, handler)
    results = await asyncio.gather(*(client.call("add", i, 1) for i in range(50)))  # many in flight
    assert results == [i + 1 for i in range(50)]
    await asyncio.sleep(0.01)
    assert await accepted[0].call("add", 2, 3) == 5  # the other way round
    with pytest.raises(RemoteError, match="KeyError"):
        await client.call("nope")
    await client.close()
    await asyncio.sleep(0.01)
    assert accepted[0].closed.is_set()
    with pytest.raises(LinkClosed):
        await accepted[0].call("add", 1)
    server.close()


async def test_an_oversized_frame_closes_the_link(tmp_path: Path) -> None:
    async def handler(op: str, args: list[Any]) -> Any:
        return None

    client, accepted, server = await _pair(tmp_path, handler)
    client._writer.write(struct.pack(">I", MAX_FRAME + 1))
    await asyncio.sleep(0.05)
    assert accepted[0].closed.is_set()
    await client.close()
    server.close()
