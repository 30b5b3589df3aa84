"""Traffic controls: IP rules (before identity) and rate limits (after authorisation)."""

from __future__ import annotations

from typing import Any

from bastion.stages.base import RouteInfo, Services
from bastion.stages.traffic.config import TrafficPolicy


def prepare(config: Any, services: Services) -> Any:
    """Shared per config load: limiter state. (Filled in by the traffic layer.)"""
    return None


def build_ip_rules(policy: TrafficPolicy, route: RouteInfo, shared: Any) -> Any:
    return None


def build_rate_limits(policy: TrafficPolicy, route: RouteInfo, shared: Any) -> Any:
    return None
