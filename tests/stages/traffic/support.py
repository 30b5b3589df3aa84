"""Small builders shared by the traffic tests: requests, routes, policies and an injected clock."""

from __future__ import annotations

from typing import Any

from bastion.context import Identity, RequestContext
from bastion.stages.base import RouteInfo
from bastion.stages.traffic.config import TrafficPolicy

ORDERS = RouteInfo("orders", "get-order", "partner", "/orders/{id}", frozenset({"GET"}))
ORDERS_LIST = RouteInfo("orders", "list-orders", "partner", "/orders", frozenset({"GET"}))
BILLING = RouteInfo("billing", "get-invoice", "partner", "/invoices/{id}", frozenset({"GET"}))
INTERNAL = RouteInfo("hr", "get-person", "internal", "/people/{id}", frozenset({"GET"}))


class Clock:
    """An injected wall clock that only moves when a test moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def request(ip: str = "192.0.2.1", consumer: str | None = None, credential: str | None = None,
            claims: dict[str, Any] | None = None, headers: list[tuple[str, str]] | None = None,
            subject: str | None = None) -> RequestContext:
    ctx = RequestContext(method="GET", raw_target="/orders/1", path="/orders/1", query="",
                         headers=headers or [], client_ip=ip, request_id="req-1", start=0.0)
    if consumer or credential or claims or subject:
        ctx.identity = Identity("jwt", subject=subject, consumer=consumer, credential_id=credential,
                                claims=claims or {})
    return ctx


def policy(**traffic: Any) -> TrafficPolicy:
    return TrafficPolicy.model_validate(traffic)
