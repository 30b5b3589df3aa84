"""Passive outlier detection and active probe thresholds, on an injected clock."""

from __future__ import annotations

from bastion.upstreams.config import HealthCheckConfig, OutlierConfig
from bastion.upstreams.health import Health
from bastion.upstreams.target import TargetState


def setup(n: int = 2, **outlier: object) -> tuple[list[TargetState], Health]:
    targets = [TargetState(f"10.0.0.{i}:80") for i in range(n)]
    health = Health(targets, OutlierConfig.model_validate({"consecutive_5xx": 3, "consecutive_connect_failures": 2,
                                                          "base_ejection": 10, "max_ejection": 35, **outlier}),
                    HealthCheckConfig(interval=5, healthy_threshold=2, unhealthy_threshold=3))
    return targets, health


def test_consecutive_5xx_eject_for_a_growing_time() -> None:
    (a, _), health = setup()
    assert health.answered(a, 502, None, 0.0) == []
    assert health.answered(a, 500, None, 0.1) == []
    [event] = health.answered(a, 503, None, 0.2)
    assert (event.action, event.reason, event.seconds) == ("ejected", "consecutive_5xx", 10.0)
    assert not a.available(5.0) and a.available(10.2)
    for second in (11.0, 11.1):  # back, fails again without a success in between: twice as long
        health.answered(a, 500, None, second)
    [event] = health.answered(a, 500, None, 11.2)
    assert event.seconds == 20.0
    for second in (40.0, 40.1):
        health.answered(a, 500, None, second)
    assert health.answered(a, 500, None, 40.2)[0].seconds == 35.0  # capped by max_ejection


def test_a_success_resets_the_count_and_the_growth() -> None:
    (a, _), health = setup()
    health.answered(a, 500, None, 0.0)
    health.answered(a, 500, None, 0.1)
    health.answered(a, 200, None, 0.2)
    assert health.answered(a, 500, None, 0.3) == []
    a.ejections = 3
    health.answered(a, 204, None, 1.0)
    assert a.ejections == 0


def test_connect_failures_and_timeouts() -> None:
    (a, b), health = setup()
    assert health.failed(a, "upstream_connect_failed", 0.0) == []
    assert health.failed(a, "upstream_connect_timeout", 0.1)[0].reason == "consecutive_connect_failures"
    for t in (0.0, 0.1):
        health.failed(b, "upstream_timeout", t)  # a hang counts like a 5xx
    assert b.consecutive_5xx == 2
    assert health.failed(b, "upstream_pool_exhausted", 0.2) == []  # our own limit says nothing of the target


def test_max_ejected_percent_keeps_part_of_the_pool() -> None:
    (a, b, c, d), health = setup(4, max_ejected_percent=50)
    for target in (a, b, c):
        for t in (0.0, 0.1):
            health.failed(target, "upstream_connect_failed", t)
    assert [t.available(1.0) for t in (a, b, c, d)] == [False, False, True, True]
    (x, y), health = setup(2, max_ejected_percent=0)
    for target in (x, y):
        for t in (0.0, 0.1):
            health.failed(target, "upstream_connect_failed", t)
    assert [x.available(1.0), y.available(1.0)] == [False, True]  # one may always go, never the last


def test_retry_after_holds_a_target_back() -> None:
    (a, _), health = setup()
    [event] = health.answered(a, 503, 30.0, 100.0)
    assert event.action == "retry_after" and not a.available(129.0) and a.available(130.0)
    health.answered(a, 429, 3600.0, 200.0)
    assert a.available(200.0 + 35.0)  # never longer than max_ejection
    health.answered(a, 200, 60.0, 300.0)  # Retry-After on a 200 means nothing here
    assert a.available(300.0)


def test_probe_thresholds() -> None:
    (a, _), health = setup()
    assert health.probed(a, False, "probe_timeout") == []
    assert health.probed(a, False, "probe_timeout") == []
    [down] = health.probed(a, False, "probe_timeout")
    assert (down.action, down.reason, a.healthy) == ("unhealthy", "probe_timeout", False)
    assert health.probed(a, True, "") == []
    [up] = health.probed(a, True, "")
    assert up.action == "healthy" and a.healthy
    a.healthy = False
    assert health.back_in(0.0) == 10.0  # interval x healthy_threshold


def test_back_in_is_the_earliest_return() -> None:
    targets = [TargetState("a:1", ejected_until=50.0), TargetState("b:1", not_before=20.5)]
    assert Health(targets, OutlierConfig(), None).back_in(10.0) == 11.0
