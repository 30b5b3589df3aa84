"""Concurrency limits: refused when full, released once by the server's finalizers."""

from __future__ import annotations

import pytest

from bastion.context import Continue, Deny
from bastion.stages.traffic import ConcurrencyGate, build_rate_limits
from bastion.stages.traffic.concurrency import ConcurrencyStage
from bastion.stages.traffic.ratelimit import RateLimitStage
from tests.stages.traffic.support import ORDERS, policy, request


def finish(ctx, status: int = 200) -> None:  # type: ignore[no-untyped-def]
    for finalizer in ctx.finalizers:  # what the server does once the response is done
        finalizer(status)


async def test_max_concurrent_refuses_then_frees() -> None:
    stage = build_rate_limits(policy(max_concurrent=2), ORDERS, None)
    assert isinstance(stage, ConcurrencyStage)
    a, b, c = request(), request(), request()
    assert isinstance(await stage.check(a), Continue)
    assert isinstance(await stage.check(b), Continue)
    refused = await stage.check(c)
    assert isinstance(refused, Deny) and (refused.status, refused.reason) == (503, "concurrency_limit")
    assert refused.policy_id.endswith("/traffic.max_concurrent")
    assert c.finalizers == []  # a refused request holds no slot
    finish(a, 200)
    assert isinstance(await stage.check(request()), Continue)
    assert stage.gate.in_flight == 2


async def test_with_rate_limits_one_stage_does_both() -> None:
    stage = build_rate_limits(policy(max_concurrent=1, rate_limits=[{"name": "n", "limit": 5, "window": 60}]),
                              ORDERS, None)
    assert isinstance(stage, RateLimitStage)
    first = request()
    assert isinstance(await stage.check(first), Continue)
    second = await stage.check(request())
    assert isinstance(second, Deny) and second.reason == "concurrency_limit"
    finish(first, 502)
    assert isinstance(await stage.check(request()), Continue)


def test_gate() -> None:
    gate = ConcurrencyGate(1)
    assert gate.try_acquire() and not gate.try_acquire()
    gate.release()
    gate.release()  # never below zero
    assert gate.in_flight == 0
    with pytest.raises(ValueError):
        ConcurrencyGate(0)
