"""Temporary blocks of an IP, subject or consumer: placed by detections (or an operator), checked first on every
request, shared through the state backend when one is configured, expiring by themselves.

```python
blocks = BlockList(state=services.state, audit=audit)
decision = await blocks.check(ctx)          # first stage of every request: Deny(403, "blocked") or CONTINUE
await blocks.list_blocks()                  # admin API / CLI
await blocks.lift("ip", "203.0.113.9")
```
The local view answers in microseconds. With a shared backend, a key not blocked locally is looked up there at
most once per `shared_cache` seconds, so a block placed by another instance applies here within that time.
An unreachable backend fails open for blocks (a block is a response to an attack, not a baseline control) and
the local view keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bastion import policy_ids as ids
from bastion.audit.metrics import AuditMetrics
from bastion.cache import BoundedCache
from bastion.context import CONTINUE, Decision, Deny, RequestContext

KINDS = ("ip", "subject", "consumer")
POLICY_ID = ids.gateway("audit.responses.block")


@dataclass(frozen=True, slots=True)
class Block:
    """One block in force."""

    kind: str  # ip | subject | consumer
    key: str
    until: float  # wall-clock seconds
    reason: str  # the detection (or "operator")
    finding: str | None = None  # metadata.uid of the finding that placed it
    created: float = 0.0


class BlockList:
    """Blocks in force, as a stage-like object (`control = "blocklist"`, `async check(ctx)`)."""

    control = "blocklist"
    needs_body = False

    def __init__(self, state: Any = None, *, audit: Any = None, metrics: AuditMetrics | None = None,
                 clock: Callable[[], float] = time.time, shared_cache: float = 1.0,
                 max_blocks: int = 10_000, max_checked: int = 100_000) -> None:
        self.state = state
        self.audit = audit
        self.metrics = metrics if metrics is not None else getattr(audit, "metrics", None)
        self.clock = clock
        self.shared_cache = shared_cache
        self.max_blocks = max_blocks
        self._blocks: dict[tuple[str, str], Block] = {}
        # keys asked of the shared state within the last `shared_cache` seconds (LRU with expiry: a client
        # rotating addresses or subjects cannot flush it, nor grow it past its bound)
        self._checked: BoundedCache[tuple[str, str], bool] = BoundedCache(max_checked, shared_cache)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned = False

    def use_state(self, state: Any) -> None:
        """Share blocks through `state` (a `bastion.state` backend), e.g. once `Services.state` is opened."""
        self.state = state

    # ---- the request path ---------------------------------------------------------------------------------

    def is_blocked(self, ip: str | None, subject: str | None = None, consumer: str | None = None) -> str | None:
        """The reason a caller is blocked (this instance's view), or None. Synchronous, microseconds."""
        if not self._blocks:
            return None
        block = self._find(ip, subject, consumer, self.clock())
        return f"{block.kind} {block.key} blocked ({block.reason})" if block is not None else None

    def _find(self, ip: str | None, subject: str | None, consumer: str | None, now: float) -> Block | None:
        blocks = self._blocks
        for kind, key in (("ip", ip), ("subject", subject), ("consumer", consumer)):
            if key:
                block = blocks.get((kind, key))
                if block is not None:
                    if block.until > now:
                        return block
                    del blocks[(kind, key)]
                    self._gauge(kind)
        return None

    async def check(self, ctx: RequestContext) -> Decision:
        """CONTINUE, or Deny(403, "blocked") while the client's IP, subject or consumer is blocked."""
        identity = ctx.identity
        subject = identity.subject if identity is not None else None
        consumer = identity.consumer if identity is not None else None
        now = self.clock()
        block = self._find(ctx.client_ip, subject, consumer, now) if self._blocks else None
        if block is None and self.state is not None:
            due = self._due(ctx.client_ip, subject, consumer, now)
            if due:  # not asked recently: ask the shared state (otherwise no coroutine, no await)
                block = await self._shared(due, now)
        if block is None:
            return CONTINUE
        retry = max(1, int(block.until - now))
        return Deny(403, "blocked", POLICY_ID, detail="Requests from this client are temporarily blocked.",
                    headers=(("retry-after", str(retry)),),
                    log_detail=f"{block.kind} {block.key} blocked until {block.until:.0f} by {block.reason}"
                               + (f" (finding {block.finding})" if block.finding else ""))

    def _due(self, ip: str | None, subject: str | None, consumer: str | None,
             now: float) -> list[tuple[str, str]]:
        """The keys whose shared-state answer is older than `shared_cache`."""
        checked = self._checked
        due: list[tuple[str, str]] = []  # by hand, not a comprehension over a tuple of pairs: twice per request
        if ip and checked.get(("ip", ip), now) is None:
            due.append(("ip", ip))
        if subject and checked.get(("subject", subject), now) is None:
            due.append(("subject", subject))
        if consumer and checked.get(("consumer", consumer), now) is None:
            due.append(("consumer", consumer))
        return due

    async def _shared(self, due: list[tuple[str, str]], now: float) -> Block | None:
        for kind, key in due:
            self._checked.put((kind, key), True, now)
            try:
                until = await self.state.is_blocked(kind, key, now)
            except Exception as exc:  # StateUnavailable or a broken backend: fail open, say it once
                self._warn(exc)
                return None
            if until is not None and until > now:
                block = Block(kind, key, until, "shared", None, now)
                self._blocks[(kind, key)] = block
                self._gauge(kind)
                return block
        return None

    # ---- placing and lifting ------------------------------------------------------------------------------

    def place(self, kind: str, key: str, seconds: float, reason: str, finding: str | None = None) -> float | None:
        """Block `kind`/`key` for `seconds` here at once, and in the shared state in the background.
        Returns the end of the block, or None when `max_blocks` are already in force."""
        if kind not in KINDS:
            raise ValueError(f"unknown block kind {kind!r}: one of {', '.join(KINDS)}")
        now = self.clock()
        if (kind, key) not in self._blocks and len(self._blocks) >= self.max_blocks:
            self._sweep(now)
            if len(self._blocks) >= self.max_blocks:
                return None
        until = now + seconds
        existing = self._blocks.get((kind, key))
        if existing is not None and existing.until >= until:
            return existing.until
        self._blocks[(kind, key)] = Block(kind, key, until, reason, finding, now)
        self._checked.pop((kind, key))
        if self.metrics is not None:
            self.metrics.blocks.labels(kind).inc()
        self._gauge(kind)
        if self.audit is not None:
            self.audit.admin("block.create", "success", kind=kind, key=key, until=until, reason=reason,
                             finding=finding)
        if self.state is not None:
            self._background(self.state.block(kind, key, until))
        return until

    async def block(self, kind: str, key: str, seconds: float, reason: str = "operator") -> float | None:
        """`place`, then wait until the shared state has it too (admin API / CLI)."""
        until = self.place(kind, key, seconds, reason)
        if until is not None and self.state is not None:
            await self.state.block(kind, key, until)
        return until

    async def lift(self, kind: str, key: str) -> bool:
        """End a block now, here and in the shared state. True when one was in force here."""
        existed = self._blocks.pop((kind, key), None) is not None
        self._gauge(kind)
        if self.state is not None:
            await self.state.unblock(kind, key)
        self._checked.pop((kind, key))
        if self.audit is not None:
            self.audit.admin("block.lift", "success", kind=kind, key=key, was_active=existed)
        return existed

    def forget(self, kind: str, key: str) -> None:
        """Drop this instance's copy of a block lifted elsewhere (the supervisor tells its workers)."""
        if self._blocks.pop((kind, key), None) is not None:
            self._gauge(kind)
        self._checked.pop((kind, key))

    async def list_blocks(self) -> list[dict[str, Any]]:
        """Blocks in force as this instance knows them (its own and those it has seen in the shared state;
        a backend with `list_blocks()` adds every instance's)."""
        now = self.clock()
        self._sweep(now)
        found = {(b.kind, b.key): asdict(b) for b in self._blocks.values()}
        lister = getattr(self.state, "list_blocks", None)
        if callable(lister):
            with contextlib.suppress(Exception):
                for kind, key, until in await lister():
                    if kind in KINDS and until > now:
                        found.setdefault((kind, key), asdict(Block(kind, key, until, "shared")))
        return sorted(found.values(), key=lambda b: b["until"])

    # ---- housekeeping -------------------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        for key in [k for k, b in self._blocks.items() if b.until <= now]:
            del self._blocks[key]
        for kind in KINDS:
            self._gauge(kind)

    def _gauge(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.blocks_active.labels(kind).set(sum(1 for k in self._blocks if k[0] == kind))

    def _background(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller in a test): the local block still holds
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._warn(task.exception())

    def _warn(self, exc: BaseException | None) -> None:
        if not self._warned:
            self._warned = True
            print(f"bastion: shared blocks unavailable, using this instance's only: {exc!r}", file=sys.stderr)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
