"""Redis (or Valkey) state shared by every worker and gateway instance (redis-py asyncio, hiredis parser).

- Every request's limits are checked and charged by one Lua script (EVALSHA; loaded again on NOSCRIPT),
  so updates are atomic and cost one round trip.
- Unreachable Redis never blocks the event loop: socket and connect timeouts are short, redis-py's own retries
  are off, and after a failure calls fail at once with `StateUnavailable` for `retry_interval` seconds; the
  next call after that reconnects by itself.
- Redis Cluster (`redis+cluster://h1:p1,h2:p2/`): every Lua script touches the keys of one slot only: a
  request's hits are grouped by slot, one script per slot, run together. When one slot refuses, the units the
  others took are given back (a negative charge): all or nothing holds, except that for that moment a
  concurrent request may find them used (under-admission, never over-admission). Losing a primary makes
  only its slots unavailable (with the servers' `cluster-require-full-coverage no`), so there is no
  process-wide fail-fast: each call waits at most its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from bastion.state import Hit, Outcome, StateUnavailable
from bastion.state.scripts import HIT, KIND_CODES

_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError, rexc.MasterDownError,
                rexc.ClusterError, rexc.RedisClusterException, OSError, TimeoutError)


class RedisState:
    """The Redis backend. Keys are prefixed `bastion:` (`bastion:<limit key>`, `bastion:blk:<kind>:<key>`)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        retry_interval: float = 0.5,
        max_connections: int = 32,
        prefix: str = "bastion:",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        password: str | None = None,
    ) -> None:
        self.url = url
        self._password = password  # `gateway.state_password` ({env: ..} / {file: ..}); never in the URL
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.max_connections = int(max_connections)
        self.prefix = prefix
        self._clock = clock
        self._monotonic = monotonic
        self._redis: Redis | None = None
        self._sentinels: list[Redis] = []  # the clients a Sentinel setup keeps to its sentinels, closed with us
        self._sha = hashlib.sha1(HIT.encode()).hexdigest()
        self._down_until = 0.0
        self._last_error = ""
        # Calls queue here, in order, for one of the pool's connections. redis-py's blocking pool lets a task
        # that just released a connection take it again before the waiters: under load some of them starved
        # until their deadline (a few 503s per 100k requests in bench/). With this queue in front, the pool
        # never waits.
        self._slots = asyncio.Semaphore(self.max_connections)
        self.cluster = urlsplit(url).scheme == "redis+cluster"

    # -- connection -----------------------------------------------------------------------------------------

    def _client(self) -> Redis:
        if self._redis is None:
            options: dict[str, Any] = {
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                "retry": Retry(NoBackoff(), 0),  # we fail fast and let the caller choose; no hidden waits
                "health_check_interval": 0,
            }
            if self._password is not None:
                options["password"] = self._password
            # A bounded pool that waits (within the deadline) for a free connection instead of failing.
            pool = {"max_connections": self.max_connections, "timeout": self.timeout}
            self._redis, self._sentinels = _connect(self.url, options, pool)
        return self._redis

    async def _call(self, operation: Callable[[Redis], Any]) -> Any:
        """Run one Redis operation under a deadline; map every transport failure to StateUnavailable."""
        if self._down_until and self._monotonic() < self._down_until:
            raise StateUnavailable(f"redis unavailable: {self._last_error}")
        queued = True
        try:
            async with asyncio.timeout(2 * self.timeout):
                async with self._slots:
                    queued = False
                    result = await operation(self._client())
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # redis-py (on uvloop) can swallow a cancellation that lands while a reply is read and
                        # return normally; honour it (our deadline's becomes TimeoutError just below)
                        raise asyncio.CancelledError
        except _UNAVAILABLE as exc:
            if queued or "No connection available" in str(exc):  # our own pool is busy: overload, Redis is fine
                raise StateUnavailable("redis connection pool exhausted") from exc
            self._last_error = f"{type(exc).__name__}: {exc}"[:200]
            if not self.cluster:  # one primary down is not the whole cluster down
                self._down_until = self._monotonic() + self.retry_interval
            raise StateUnavailable(f"redis unavailable: {self._last_error}") from exc
        self._down_until = 0.0
        return result

    @property
    def available(self) -> bool:
        """False while calls fail fast after a failure (for /readyz and metrics)."""
        return not (self._down_until and self._monotonic() < self._down_until)

    async def ping(self) -> None:
        """One PING under the deadline (the readiness probe); raises StateUnavailable."""
        await self._call(lambda redis: redis.ping())

    # -- limits ---------------------------------------------------------------------------------------------

    async def hit(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        if self.cluster and len(hits) > 1:
            return await self._hit_by_slot(hits, now)
        keys = [self.prefix + hit.key for hit in hits]
        args: list[Any] = [repr(float(now))]
        for hit in hits:
            args += [KIND_CODES[hit.kind], repr(float(hit.limit)), repr(float(hit.period)), hit.cost,
                     hit.take, repr(float(hit.anchor))]
        sha = self._sha

        async def run(redis: Redis) -> Any:
            try:
                return await redis.evalsha(sha, len(keys), *keys, *args)
            except rexc.NoScriptError:  # first call on this server, or after a restart / SCRIPT FLUSH
                return await redis.eval(HIT, len(keys), *keys, *args)

        raw = await self._call(run)
        return [
            Outcome(bool(raw[i]), int(raw[i + 1]), float(raw[i + 2]), float(raw[i + 3]), int(raw[i + 4]))
            for i in range(0, len(raw), 5)
        ]

    async def _hit_by_slot(self, hits: Sequence[Hit], now: float) -> list[Outcome]:
        from redis.crc import key_slot

        groups: dict[int, list[int]] = {}
        for index, hit in enumerate(hits):
            groups.setdefault(key_slot((self.prefix + hit.key).encode()), []).append(index)
        answers = await asyncio.gather(*(self.hit([hits[i] for i in members], now) for members in groups.values()))
        outcomes: list[Outcome] = [Outcome(False, 0, 0.0, 0.0)] * len(hits)
        for members, answer in zip(groups.values(), answers, strict=True):
            for index, outcome in zip(members, answer, strict=True):
                outcomes[index] = outcome
        if all(o.allowed for o in outcomes):
            return outcomes
        # refused by one slot: give back what the others took (a negative charge), so the request charged
        # nothing, as on one Redis; until then a concurrent request may see those units as used
        refunds = [hits[i].refund(o.granted) for i, o in enumerate(outcomes) if o.granted]
        if refunds:
            with contextlib.suppress(StateUnavailable):
                await asyncio.gather(*(self.hit([refund], now) for refund in refunds))
        return [o.ungranted() for o in outcomes]

    # -- blocks (revocations, temporary blocks) -------------------------------------------------------------

    def _block_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}blk:{kind}:{key}"

    async def block(self, kind: str, key: str, until: float) -> None:
        ttl_ms = int((until - self._clock()) * 1000)
        name = self._block_key(kind, key)
        if ttl_ms <= 0:
            await self._call(lambda redis: redis.delete(name))
        else:
            await self._call(lambda redis: redis.set(name, repr(float(until)), px=ttl_ms))

    async def unblock(self, kind: str, key: str) -> None:
        name = self._block_key(kind, key)
        await self._call(lambda redis: redis.delete(name))

    async def is_blocked(self, kind: str, key: str, now: float | None = None) -> float | None:
        name = self._block_key(kind, key)
        value = await self._call(lambda redis: redis.get(name))
        if value is None:
            return None
        until = float(value)
        return until if until > (self._clock() if now is None else now) else None

    async def close(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()
            pool = getattr(redis, "connection_pool", None)  # a cluster client has one pool per node, closed above
            if pool is not None:
                await pool.disconnect()  # a pool passed in is not closed by aclose()
        sentinels, self._sentinels = self._sentinels, []
        for sentinel in sentinels:
            await sentinel.aclose()


def _connect(url: str, options: dict[str, Any], pool: dict[str, Any]) -> tuple[Redis, list[Redis]]:
    """A client for `redis://`, `rediss://`, `unix://`, `valkey://` or `redis+sentinel://h1:p1,h2:p2/svc/db`."""
    parts = urlsplit(url)
    if parts.scheme == "redis+sentinel":
        netloc = parts.netloc.rpartition("@")[2]
        hosts = []
        for item in netloc.split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host.strip("[]") or "localhost", int(port or 26379)))
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs a service name: redis+sentinel://h:26379/mymaster/0")
        db = int(path[1]) if len(path) > 1 else 0
        password = unquote(parts.password) if parts.password else None
        sentinel = Sentinel(hosts, **options)
        client: Redis = sentinel.master_for(path[0], db=db, password=password,
                                            max_connections=pool["max_connections"], **options)
        return client, list(sentinel.sentinels)
    if parts.scheme == "redis+cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes = []
        for item in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = item.rpartition(":")
            nodes.append(ClusterNode(host.strip("[]") or "localhost", int(port or 6379)))
        password = unquote(parts.password) if parts.password else None
        options = {k: v for k, v in options.items() if k != "health_check_interval"}
        cluster = RedisCluster(startup_nodes=nodes, password=password, max_connections=pool["max_connections"],
                               require_full_coverage=False, **options)
        return cluster, []  # type: ignore[return-value]  # the cluster client speaks the commands we use
    if parts.scheme.startswith("valkey"):
        url = "redis" + url[len("valkey"):]
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, **pool, **options)), []
