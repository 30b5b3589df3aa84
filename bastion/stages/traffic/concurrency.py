"""Concurrency limits: a bounded count of requests in flight, refused (never queued) when full."""

from __future__ import annotations

from bastion.context import Continue, Decision, Deny, RequestContext


class ConcurrencyGate:
    """A non-blocking counting gate for one event loop (one process): `try_acquire()` or refuse.

    Reusable for per-upstream limits: `if not gate.try_acquire(): 503`, then `gate.release()` exactly once.
    """

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a concurrency limit is at least 1")
        self.limit = limit
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self, status: int = 0) -> None:
        """Give the slot back (`status` lets it be used directly as a `ctx.finalizers` callable)."""
        if self.in_flight > 0:
            self.in_flight -= 1


class ConcurrencyStage:
    """`max_concurrent: 64`: 503 `concurrency_limit` when the route already has 64 requests in flight."""

    control = "traffic.concurrency"
    needs_body = False

    def __init__(self, limit: int, policy_id: str) -> None:
        self.gate = ConcurrencyGate(limit)
        self.policy_id = policy_id
        self._allow = Continue(policy_id)

    async def check(self, ctx: RequestContext) -> Decision:
        gate = self.gate
        if not gate.try_acquire():
            return Deny(503, "concurrency_limit", self.policy_id,
                        detail="The service is busy; retry shortly.", headers=(("retry-after", "1"),),
                        log_detail=f"{gate.in_flight} requests in flight (max_concurrent {gate.limit})")
        ctx.finalizers.append(gate.release)  # the server calls it once with the final status
        return self._allow
