"""Traffic controls: IP rules (before identity), rate limits, quotas and concurrency (after authorisation).

`prepare` runs once per config load and holds the process's `Limiter` (the shared state backend, leases and
the local fallback); `build_ip_rules` and `build_rate_limits` build a route's stages from its effective
`TrafficPolicy`, or return None when the control is off for that route.

Consumer tiers: `prepare` maps each consumer with a `tier:` (from the root config's `consumers:`) to its tier;
a limit with `tiers: [...]` then applies to those consumers only, on top of the untiered limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.stages.base import RouteInfo, Services, SharedBase
from bastion.stages.traffic.concurrency import ConcurrencyGate, ConcurrencyStage
from bastion.stages.traffic.config import TrafficPolicy
from bastion.stages.traffic.iprules import IpRulesStage, NetworkRules, consumer_networks_decision
from bastion.stages.traffic.limiter import Alert, Limiter
from bastion.stages.traffic.ratelimit import RateLimitStage, compile_limit, compile_quota
from bastion.state import open_state
from bastion.state.memory import MemoryState

__all__ = [
    "ConcurrencyGate", "NetworkRules", "TrafficPolicy", "TrafficShared", "build_ip_rules", "build_rate_limits",
    "consumer_networks_decision", "consumer_tiers", "prepare", "tier_warnings",
]


@dataclass(slots=True)
class TrafficShared(SharedBase):
    """What every route's traffic stages share within one config load."""

    limiter: Limiter
    clock: Callable[[], float]
    consumer_tiers: Mapping[str, str] = field(default_factory=dict)  # consumer name -> tier

    async def close(self) -> None:
        """Nothing to close: the state backend belongs to the process (`Services.state`), not to one config."""


def _audit_alert(services: Services) -> Alert | None:
    if services.alert is not None:
        return services.alert
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
    return TrafficShared(limiter, services.wall_clock, consumer_tiers(config))


def consumer_tiers(config: Any) -> dict[str, str]:
    """Consumer name -> tier, for the consumers of the root config that have one."""
    return {c.name: c.tier for c in getattr(config, "consumers", None) or () if c.tier is not None}


def _named_tiers(traffic: Any) -> set[str]:
    """Tiers named by the limits and quotas of one `traffic:` section (a model or plain YAML data)."""
    if hasattr(traffic, "model_dump"):
        traffic = traffic.model_dump(mode="json")
    if not isinstance(traffic, dict):
        return set()
    found: set[str] = set()
    for section in ("rate_limits", "quotas"):
        items = traffic.get(section)
        for item in items if isinstance(items, list) else ():
            tiers = item.get("tiers") if isinstance(item, dict) else None
            found.update(t for t in tiers or () if isinstance(t, str))
    return found


def tier_warnings(config: Any) -> list[str]:
    """For `validate`: a consumer's `tier` that no limit names (a typo leaves it with the untiered limits
    only), and a tier that limits name but no consumer has. Messages, empty when tiers are consistent."""
    named: set[str] = set()
    for klass in (getattr(config, "classes", None) or {}).values():
        named |= _named_tiers(getattr(klass, "traffic", None))
    for api in getattr(config, "apis", None) or ():
        layers = [getattr(api, "policy", None)] + [getattr(r, "policy", None) for r in getattr(api, "routes", ())]
        for layer in layers:
            if isinstance(layer, dict):
                named |= _named_tiers(layer.get("traffic"))
    tiers = consumer_tiers(config)
    warnings = [f"consumer {name!r} has tier {tier!r}, which no rate limit or quota names: it gets the "
                "untiered limits only" for name, tier in sorted(tiers.items()) if tier not in named]
    unused = sorted(named - set(tiers.values()))
    if unused:
        warnings.append(f"traffic tiers {', '.join(unused)} are named by limits but no consumer has them")
    return warnings


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
        gate_policy_id=concurrency_id, consumer_tiers=shared.consumer_tiers,
    )
