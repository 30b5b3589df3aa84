"""The Redis backend against a real redis-server: failure, reconnection, script reload and global accuracy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.state import Hit, StateUnavailable
from bastion.state.redis_state import RedisState
from tests.state.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_unreachable_fails_fast_then_fails_at_once() -> None:
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, retry_interval=5)
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        await state.hit([Hit("k", "token_bucket", 5, 5)], 0.0)
    with pytest.raises(StateUnavailable):  # within retry_interval: no new connection attempt
        await state.is_blocked("ip", "x")
    assert time.monotonic() - started < 1.0
    assert not state.available
    await state.close()


async def test_blackholed_server_times_out_without_blocking_the_loop() -> None:
    # A listener that accepts and never answers: the socket timeout, not the OS, ends the wait.
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        await state.hit([Hit("k", "token_bucket", 5, 5)], 0.0)
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed < 1.0
    assert ticks >= 5  # the event loop kept running meanwhile
    await state.close()
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_restart_reconnects_and_reloads_the_script(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, timeout=0.2, retry_interval=0.1)
    hit = Hit("k", "sliding_window", 100, 60)
    [outcome] = await state.hit([hit], 1.0)
    assert outcome.allowed
    redis_server.stop()
    with pytest.raises(StateUnavailable):
        await state.hit([hit], 1.0)
    redis_server.start()  # same port, empty data, empty script cache (NOSCRIPT -> EVAL)
    await asyncio.sleep(0.15)
    [outcome] = await state.hit([hit], 1.0)
    assert outcome.allowed and outcome.remaining == 99
    assert state.available
    await state.close()


async def _hammer(url: str, hit: Hit, requests: int) -> int:
    state = RedisState(url, timeout=1.0)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        [outcome] = await state.hit([hit], 5.0)
        admitted += outcome.allowed

    await asyncio.gather(*(one() for _ in range(requests)))
    await state.close()
    return admitted


@pytest.mark.parametrize("kind", ["sliding_window", "token_bucket"])
async def test_two_clients_admit_exactly_the_limit(redis_server: RedisServer, kind: str) -> None:
    hit = Hit("shared", kind, limit=137, period=3600)  # type: ignore[arg-type]
    a, b = await asyncio.gather(_hammer(redis_server.url, hit, 200), _hammer(redis_server.url, hit, 200))
    assert a + b == 137
    assert a > 0 and b > 0


CHILD = """
import asyncio, sys
from bastion.state import Hit
from tests.state.test_redis_state import _hammer
hit = Hit("procs", "sliding_window", limit=int(sys.argv[2]), period=3600)
print(asyncio.run(_hammer(sys.argv[1], hit, int(sys.argv[3]))))
"""


def test_two_processes_admit_exactly_the_limit(redis_server: RedisServer) -> None:
    limit, each = 250, 300
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, redis_server.url, str(limit), str(each)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = [int(p.communicate(timeout=30)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(counts) == limit


async def test_many_more_callers_than_connections_are_all_served_in_turn(redis_server: RedisServer) -> None:
    # 4 connections, 500 callers at once, for several rounds: every call waits its turn in the gateway's own
    # queue and is answered; none is refused as "pool exhausted", and Redis is never taken for down
    # (a 0.5 s timeout: 125 calls in turn per connection must fit in the 1 s deadline on a loaded CI machine too)
    state = RedisState(redis_server.url, max_connections=4, timeout=0.5)
    hit = Hit("queue", "sliding_window", limit=10**9, period=60)
    try:
        for _ in range(5):
            outcomes = await asyncio.gather(*(state.hit([hit], time.time()) for _ in range(500)),
                                            return_exceptions=True)
            assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert state.available
    finally:
        await state.close()  # a failed round must not leave connections for a later test's warnings


async def test_a_caller_queued_past_its_deadline_is_overload_not_an_outage(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, max_connections=1, timeout=0.05)
    hit = Hit("slow", "sliding_window", limit=10**9, period=60)
    await state.hit([hit], time.time())  # connected
    async with state._slots:  # the only connection is busy for longer than the next caller's deadline
        with pytest.raises(StateUnavailable, match="pool exhausted"):
            await state.hit([hit], time.time())
    assert state.available  # overload of our own pool: Redis itself is not marked down
    assert (await state.hit([hit], time.time()))[0].allowed
    await state.close()


async def test_cluster_keeps_serving_the_slots_of_the_primaries_left(tmp_path) -> None:
    """A 3-primary cluster loses one primary during load: its slots fail fast as StateUnavailable (the caller's
    on_state_error decides), the others keep answering, no limit admits more than its size, nothing crashes."""
    from redis.crc import key_slot

    from bastion.state import open_state
    from tests.state.redis_cluster import RedisCluster, _command

    cluster = RedisCluster(tmp_path / "cluster")
    cluster.start()
    state = open_state(cluster.url, timeout=0.25)
    try:
        keys = [f"rl:shop:ip:203.0.113.{i}" for i in range(30)]
        owners = {}  # key -> port of the primary serving its slot
        for port in cluster.ports:
            for line in _command(port, "CLUSTER", "NODES").splitlines():
                if "myself" in line:
                    for span in line.split()[8:]:
                        low, _, high = span.partition("-")
                        for key in keys:
                            if int(low) <= key_slot(f"bastion:{key}".encode()) <= int(high or low):
                                owners[key] = port
        victim = cluster.ports[0]
        lost = [k for k in keys if owners[k] == victim]
        kept = [k for k in keys if owners[k] != victim]
        assert lost and kept

        async def load(key: str, count: int) -> list[object]:
            hit = Hit(key, "sliding_window", limit=5, period=60)
            out: list[object] = []
            for _ in range(count):
                try:
                    [outcome] = await state.hit([hit], time.time())
                    out.append(outcome.allowed)
                except StateUnavailable:
                    out.append("unavailable")
            return out

        # Warm up on other keys first: the client's first calls discover the slots and load the scripts on each
        # primary, which on a loaded CI machine can outlast the 250 ms deadline (once seen as "unavailable" here)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            warm = await asyncio.gather(*(load(f"rl:warm:{i}", 1) for i in range(30)))
            if all(r == [True] for r in warm):
                break
            await asyncio.sleep(0.2)
        first = await asyncio.gather(*(load(k, 3) for k in keys))
        assert all(r == [True, True, True] for r in first)
        cluster.kill(victim)
        started = time.monotonic()
        second = dict(zip(keys, await asyncio.gather(*(load(k, 4) for k in keys)), strict=True))
        assert time.monotonic() - started < 5  # each call bounded by its timeout: no hang
        for key in kept:
            assert second[key] == [True, True, False, False]  # 5 in all: the limit holds on the survivors
        for key in lost:
            assert set(second[key]) == {"unavailable"}  # fail mode: the caller decides (503 or local counts)
    finally:
        await state.close()
        cluster.stop()


async def test_sentinel_failover_fails_fast_then_finds_the_new_primary(tmp_path) -> None:
    """A Sentinel group (primary, replica, one sentinel) loses its primary: calls fail as StateUnavailable (never
    hang or crash) until the sentinel promotes the replica, then the backend finds the new primary by itself."""
    import subprocess

    from bastion.state import open_state
    from tests.state.redis_cluster import _command
    from tests.state.redis_server import free_port

    primary, replica, sentinel = free_port(), free_port(), free_port()
    # --dir: a replica's full sync writes an RDB file even with --save "" (it landed in the checkout once)
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning", "--dir", str(tmp_path)]
    procs = {primary: subprocess.Popen(["redis-server", "--port", str(primary), *common]),
             replica: subprocess.Popen(["redis-server", "--port", str(replica), "--replicaof", "127.0.0.1",
                                        str(primary), *common])}
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor main 127.0.0.1 {primary} 1\n"
                    "sentinel down-after-milliseconds main 500\nsentinel failover-timeout main 3000\n")
    procs[sentinel] = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)

    async def until(predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("timed out")

    state = open_state(f"redis+sentinel://127.0.0.1:{sentinel}/main/0", timeout=0.25, retry_interval=0.2)
    try:
        await until(lambda: "master_link_status:up" in _command(replica, "INFO", "replication"))
        await until(lambda: str(replica) in _command(sentinel, "SENTINEL", "REPLICAS", "main"))  # it can promote
        hit = Hit("rl:failover", "sliding_window", limit=100, period=60)
        assert (await state.hit([hit], time.time()))[0].allowed
        dead = procs.pop(primary)
        dead.kill()
        dead.wait(10)
        started, failures, recovered = time.monotonic(), 0, False
        while time.monotonic() - started < 20:
            try:
                [outcome] = await state.hit([hit], time.time())
            except StateUnavailable:  # the only failure a caller ever sees: its on_state_error decides
                failures += 1
                await asyncio.sleep(0.1)
                continue
            recovered = outcome.allowed
            break
        assert recovered and failures > 0
        assert "role:master" in _command(replica, "INFO", "replication")
    finally:
        await state.close()
        for proc in procs.values():
            proc.kill()
            proc.wait(10)


def test_a_cancelled_call_is_cancelled_even_where_redis_py_would_swallow_it(redis_server) -> None:
    """On uvloop, redis-py returns normally from a command cancelled while its reply is read (about half of the
    cancellations at these points, measured). A cancelled caller must see CancelledError: a readiness probe that
    did not once kept a stopping worker, and its listener, alive."""
    import uvloop

    async def outcomes() -> dict[str, int]:
        state = RedisState(redis_server.url)
        seen = {"cancelled": 0, "returned": 0}
        try:
            for i in range(200):
                task = asyncio.ensure_future(state.ping())
                for _ in range(i % 6):
                    await asyncio.sleep(0)
                if not task.cancel():
                    continue  # already answered: nothing to cancel
                try:
                    await task
                    seen["returned"] += 1
                except asyncio.CancelledError:
                    seen["cancelled"] += 1
        finally:
            await state.close()
        return seen

    seen = uvloop.run(outcomes())
    assert seen["cancelled"] > 50 and seen["returned"] == 0, seen
