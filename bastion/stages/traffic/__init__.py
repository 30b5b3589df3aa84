"""Traffic controls: IP rules (before identity), rate limits, quotas and concurrency (after authorisation).

`prepare` runs once per config load and holds the process's `Limiter` (the shared state backend, leases and
the local fallback); `build_ip_rules` and `build_rate_limits` build a route's stages from its effective
`TrafficPolicy`, or return None when the control is off for that route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bastion.stages.base import RouteInfo, Services
from bastion.stages.traffic.concurrency import ConcurrencyGate, ConcurrencyStage
from bastion.stages.traffic.config import TrafficPolicy
from bastion.stages.traffic.iprules import IpRulesStage, NetworkRules, consumer_networks_decision
from bastion.stages.traffic.limiter import Alert, Limiter
from bastion.stages.traffic.ratelimit import RateLimitStage, compile_limit, compile_quota
from bastion.state import open_state
from bastion.state.memory import MemoryState

__all__ = [
    "ConcurrencyGate", "NetworkRules", "TrafficPolicy", "TrafficShared", "build_ip_rules", "build_rate_limits",
    "consumer_networks_decision", "prepare",
]


@dataclass(slots=True)
class TrafficShared:
    """What every route's traffic stages share within one config load."""

    limiter: Limiter
    clock: Callable[[], float]

    async def close(self) -> None:
        """Nothing to close: the state backend belongs to the process (`Services.state`), not to one config."""


def _audit_alert(services: Services) -> Alert | None:
    alert = services.extra.get("alert")
    if callable(alert):
        return alert  # type: ignore[no-any-return]
    audit = services.audit
    if audit is None or not hasattr(audit, "admin"):
        return None

    def to_audit(event: str, detail: dict[str, Any]) -> None:
        audit.admin(event, "failure" if event.endswith("unavailable") else "success", **detail)
    return to_audit


def prepare(config: Any, services: Services) -> TrafficShared:
    """Once per config load: the limiter over `Services.state`, opened from `gateway.state` if not set yet."""
    if services.state is None:
        url = getattr(getattr(config, "gateway", None), "state", "memory")
        services.state = open_state(url)  # lazy: connects on first use, inside the event loop
    limiter = Limiter(services.state, alert=_audit_alert(services), monotonic=services.monotonic)
    return TrafficShared(limiter, services.wall_clock)


def build_ip_rules(policy: TrafficPolicy, route: RouteInfo, shared: Any) -> IpRulesStage | None:
    """The IP stage, or None when every address is allowed and none is denied."""
    rules = NetworkRules(policy.ip.allow, policy.ip.deny)
    if rules.allow_all and not rules.deny:
        return None
    return IpRulesStage(rules, route.policy_id("traffic.ip"))


def build_rate_limits(policy: TrafficPolicy, route: RouteInfo,
                      shared: TrafficShared | None) -> RateLimitStage | ConcurrencyStage | None:
    """Rate limits, quotas and `max_concurrent` of a route as one stage (one state round trip at most)."""
    limits = [compile_limit(limit, route) for limit in policy.rate_limits]
    limits += [compile_quota(quota, route) for quota in policy.quotas]
    concurrency_id = route.policy_id("traffic.max_concurrent")
    if not limits:
        if policy.max_concurrent is None:
            return None
        return ConcurrencyStage(policy.max_concurrent, concurrency_id)
    if shared is None:
        shared = TrafficShared(Limiter(MemoryState()), Services().wall_clock)
    gate = ConcurrencyGate(policy.max_concurrent) if policy.max_concurrent is not None else None
    return RateLimitStage(
        limits, shared.limiter, clock=shared.clock, fail_open=policy.on_state_error == "open_local",
        headers=policy.rate_limit_headers, policy_id=route.policy_id("traffic.rate_limits"), gate=gate,
        gate_policy_id=concurrency_id,
    )
