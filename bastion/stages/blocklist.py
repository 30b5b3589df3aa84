"""Blocks set by detections or operators (IP, subject, consumer), checked on every route.

Not a baseline control: no class can switch it off. The `BlockList` itself (bastion.audit.blocks) is the stage;
it lives as long as the process, in `Services.blocks`.
"""

from __future__ import annotations

from typing import Any

from bastion.stages.base import RouteInfo, Services


def prepare(config: Any, services: Services) -> Any:
    return services.blocks


def build(policy: Any, route: RouteInfo, shared: Any) -> Any:
    return shared  # None when the process has no block list (e.g. compiling for `validate`)
