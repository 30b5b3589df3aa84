"""Readiness that tells the truth: the reasons a process should not receive traffic now.

`/readyz` answers 503 with these reasons in its body while any holds, so a load balancer drains the node;
`/healthz` (liveness) stays 200 as long as the process answers. The reasons are stable snake_case codes with a
detail after a colon, e.g. `state_unavailable: redis unavailable: ConnectionError ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

# While a dependency is known down, probe it at most this often (a probe is one PING with the backend's timeout).
PROBE_INTERVAL = 1.0


def reasons(listening: bool, gateway: Any, state: Any) -> list[str]:
    """The reasons this process is not ready; empty when it is. A layer (a `compiled.shared` value) reports its
    own with `ready()` (key sets) or `readiness()` (reasons as strings, e.g. the policy engine)."""
    found: list[str] = []
    if not listening or gateway is None:
        return ["starting: not listening yet"]
    for shared in gateway.compiled.shared.lifecycle():
        if not shared.ready():
            found.append(f"jwks_missing: {type(shared).__name__} has no usable key set yet")
        more = getattr(shared, "readiness", None)  # a layer's own reasons (the policy engine)
        if callable(more):
            found += more()
    if state is not None and getattr(state, "available", True) is False:
        found.append(f"state_unavailable: the {getattr(state, 'name', 'shared')} state backend does not answer")
    return found


class ReadinessGauge:
    """`bastion_ready` (1 ready, 0 not) and `bastion_not_ready_reason{reason}` (1 while it holds)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.ready = Gauge("bastion_ready", "1 when /readyz answers 200.", registry=registry,
                           multiprocess_mode="livemin")
        self.reason = Gauge("bastion_not_ready_reason", "1 while this reason keeps /readyz at 503.", ["reason"],
                            registry=registry, multiprocess_mode="livemax")
        self._seen: set[str] = set()

    def set(self, found: list[str]) -> None:
        codes = {r.split(":", 1)[0] for r in found}
        self.ready.set(0 if found else 1)
        for code in codes | self._seen:
            self.reason.labels(code).set(1 if code in codes else 0)
        self._seen |= codes


class StateProbe:
    """Keeps the state backend's `available` flag true to the backend, even without traffic: one PING per
    `PROBE_INTERVAL` (Redis). Without it a Redis that died while the node was idle would read as up."""

    def __init__(self, state: Any, interval: float = PROBE_INTERVAL) -> None:
        self.state = state
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if callable(getattr(self.state, "ping", None)):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # The loop ends on the flag, not only on cancellation: redis-py on uvloop can swallow a cancellation that
        # lands while a PING's reply is being read (the call returns normally), and a probe that kept running
        # once held a worker's shutdown forever with its listener still open.
        while not self._closed:
            started = time.monotonic()
            with contextlib.suppress(Exception):
                await self.state.ping()
            if self._closed:
                return
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        """End the probe without waiting (a reload swapped the backend)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def close(self, timeout: float = 2.0) -> None:
        """End the probe; waits at most `timeout` (one PING is bounded by the backend's own deadline)."""
        self.stop()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
