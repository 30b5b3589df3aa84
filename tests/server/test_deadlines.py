"""Timeouts as swept deadlines: the sweep itself, and the upstream response timeouts built on it (real sockets)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bastion.server.deadlines import NEVER, Deadlines
from tests.helpers import LOOPBACK_GATEWAY, exchange, running_gateway

pytestmark = pytest.mark.asyncio


class Member:
    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.deadline = self.deadline_armed = loop.time() + delay
        self.fired_at: float | None = None
        self.loop = loop

    def expire(self) -> None:
        self.deadline = NEVER
        self.fired_at = self.loop.time()


def record_sweeps(sweep: Deadlines) -> list[float]:
    """The loop time of every sweep from now on (a sweep re-arms itself through the instance attribute)."""
    ticks: list[float] = []
    run = sweep._sweep

    def recorded() -> None:
        ticks.append(sweep.loop.time())
        run()

    sweep._sweep = recorded  # type: ignore[method-assign]
    return ticks


async def test_a_deadline_fires_once_between_its_time_and_one_sweep_later():
    # judged by the sweeps themselves, not by the wall clock: on a loaded machine a sweep may run late, and the
    # promise is "at the first sweep after the deadline", not "within 50 ms"
    loop = asyncio.get_running_loop()
    sweep = Deadlines(loop)
    ticks = record_sweeps(sweep)
    member = Member(loop, 0.2)
    armed = loop.time()
    sweep.add(member, 0.2)
    assert sweep.interval == pytest.approx(0.025)  # an eighth of the shortest timeout
    await asyncio.sleep(0.4)
    assert member.fired_at is not None
    assert member.fired_at - armed >= 0.2  # never early
    fired = max(i for i, tick in enumerate(ticks) if tick <= member.fired_at)  # the sweep that fired it
    assert fired > 0 and ticks[fired - 1] < member.deadline_armed  # ... the first one after its deadline
    assert all(b - a > sweep.interval - 1e-3 for a, b in itertools.pairwise(ticks))  # none in between


async def test_rearming_later_postpones_and_never_disarms():
    loop = asyncio.get_running_loop()
    sweep = Deadlines(loop)
    postponed, disarmed = Member(loop, 0.05), Member(loop, 0.05)
    sweep.add(postponed, 0.05)
    sweep.add(disarmed, 0.05)
    later = postponed.deadline = loop.time() + 0.3
    disarmed.deadline = NEVER
    await asyncio.sleep(0.45)
    assert postponed.fired_at is not None and postponed.fired_at >= later  # at its new deadline, not the first
    assert disarmed.fired_at is None


async def test_a_discarded_member_never_fires_and_the_sweep_stops_when_empty():
    loop = asyncio.get_running_loop()
    sweep = Deadlines(loop)
    member = Member(loop, 0.05)
    sweep.add(member, 0.05)
    sweep.discard(member)
    await asyncio.sleep(0.15)
    assert member.fired_at is None
    assert sweep._handle is None


async def test_a_failing_member_does_not_stop_the_others():
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        sweep = Deadlines(loop)

        class Broken(Member):
            def expire(self) -> None:
                self.deadline = NEVER
                raise RuntimeError("broken")

        broken, fine = Broken(loop, 0.05), Member(loop, 0.05)
        sweep.add(broken, 0.05)
        sweep.add(fine, 0.05)
        await asyncio.sleep(0.2)
        assert fine.fired_at is not None
        assert [type(c["exception"]) for c in errors] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)


# ---- upstream response timeouts over real sockets ---------------------------------------------------------

CONFIG = LOOPBACK_GATEWAY + """
classes:
  open:
    identity: {required: false}
    traffic: {upstream_timeout: 300ms}
apis:
  - name: feed
    owner: team-feed@example.com
    class: open
    upstream: http://127.0.0.1:%d
    routes:
      - {name: feed, path: /feed, methods: [GET]}
"""


class TricklingUpstream:
    """Answers with a head at once, then `pieces` body bytes, one every `gap` seconds (Content-Length: 10), then
    stays silent until stopped."""

    def __init__(self, pieces: int, gap: float) -> None:
        self.pieces, self.gap = pieces, gap
        self.stopped = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(self.pieces):
            await asyncio.sleep(self.gap)
            writer.write(b"x")
        await self.stopped.wait()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        self.stopped.set()
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


async def test_a_body_that_keeps_coming_is_not_cut_by_the_idle_timeout(tmp_path):
    # 1 s in all, never 300 ms without a byte
    async with TricklingUpstream(10, 0.1) as port, running_gateway(tmp_path, CONFIG % port) as gw:
        reply = await exchange(gw.bound[0][1], b"GET /feed HTTP/1.1\r\nHost: a\r\n\r\n", timeout=2)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nxxxxxxxxxx")


async def test_a_stalled_body_ends_the_response_and_the_connection(tmp_path):
    # 3 of 10 bytes, then silence
    async with TricklingUpstream(3, 0.05) as port, running_gateway(tmp_path, CONFIG % port) as gw:
        started = time.monotonic()
        reply = await exchange(gw.bound[0][1], b"GET /feed HTTP/1.1\r\nHost: a\r\n\r\n", timeout=5)
        elapsed = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"\r\n\r\nxxx"), reply  # cut, not padded
        assert 0.3 < elapsed < 3, elapsed  # closed by the gateway after the idle timeout, not by our 5 s
