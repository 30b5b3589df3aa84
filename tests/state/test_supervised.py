"""The embedded shared state: a worker's `SupervisedState` over a real Unix socket to a supervisor's
`StateService` (the limit conversations themselves run in test_backends.py against this backend too)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bastion.server.link import Link, connect
from bastion.server.state_service import StateService
from bastion.stages.identity.revocation import StateRevocationList
from bastion.state import Hit, StateUnavailable
from bastion.state.memory import MemoryState
from bastion.state.supervised import SupervisedState


@asynccontextmanager
async def supervised_state(tmp_path: Path, *, delay: float = 0.0) -> AsyncIterator[tuple[SupervisedState, Any]]:
    """A supervisor's state service on a Unix socket and one worker's backend linked to it."""
    memory = MemoryState()
    service = StateService(memory)
    links: list[Link] = []

    async def handle(op: str, args: list[Any]) -> Any:
        if delay:
            await asyncio.sleep(delay)
        return await service.handle(op, args)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer, handle, inline=frozenset() if delay else StateService.INLINE)
        links.append(link)
        link.start()

    path = str(tmp_path / "s.sock")
    server = await asyncio.start_unix_server(accept, path)
    worker = await connect(path)
    try:
        yield SupervisedState(worker), service
    finally:
        await worker.close()
        for link in links:
            await link.close()
        server.close()


async def test_two_workers_share_one_limit(tmp_path: Path) -> None:
    async with supervised_state(tmp_path) as (first, service):
        second = SupervisedState(await connect(str(tmp_path / "s.sock")))
        hit = Hit("rl:shop:ip:1", "sliding_window", limit=3, period=60)
        answers = [(await state.hit([hit], 10.0))[0].allowed for state in (first, second, first, second)]
        assert answers == [True, True, True, False]  # 3 in all, not 3 per worker
        await second.link.close()  # type: ignore[attr-defined]


async def test_blocks_and_revocations_live_in_the_supervisor(tmp_path: Path) -> None:
    async with supervised_state(tmp_path) as (state, service):
        now = time.time()
        await state.block("ip", "203.0.113.9", now + 60)
        assert await service.state.is_blocked("ip", "203.0.113.9") == pytest.approx(now + 60)
        assert await state.list_blocks() == [("ip", "203.0.113.9", pytest.approx(now + 60))]
        worker_view = StateRevocationList(state)
        await worker_view.revoke("sub", "alice", now + 60, source="ssf")
        admin_view = StateRevocationList(service.state)  # the supervisor's admin API reads the same records
        assert [r.value for r in await admin_view.list_revocations()] == ["alice"]
        assert await worker_view.is_revoked(None, "alice", None)
        assert await worker_view.remember_once("set", "jti-1", now + 60)
        assert not await worker_view.remember_once("set", "jti-1", now + 60)
        assert await admin_view.lift("sub", "alice")
        assert not await worker_view.is_revoked(None, "alice", None)


async def test_a_slow_or_gone_supervisor_is_state_unavailable(tmp_path: Path) -> None:
    async with supervised_state(tmp_path, delay=0.5) as (state, _):
        started = time.monotonic()
        # the backend's own timeout (0.25 s) fired, before the 0.5 s answer: its message names it (the wall clock
        # only bounds a hang; on a loaded machine the call's own overhead may take longer than 0.15 s)
        with pytest.raises(StateUnavailable, match=r"no answer within 0\.25s"):
            await state.hit([Hit("k", "token_bucket", limit=1, period=1)], 0.0)
        assert time.monotonic() - started < 5.0
        assert state.available is False
    async with supervised_state(tmp_path) as (state, _):
        state.available = False  # as after a failed call
        await state.ping()  # the readiness probe's call, without traffic
        assert state.available is True
    with pytest.raises(StateUnavailable):  # the link is closed now
        await state.is_blocked("ip", "x")
