"""TrafficPolicy validation: the shapes users write, the mistakes refused, and the strictness annotations."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.governance.baseline import is_weaker
from bastion.stages.traffic.config import RateLimit, TrafficPolicy


@pytest.mark.parametrize(("data", "capacity", "period"), [
    ({"name": "a", "limit": 100, "window": "1m"}, 100, 60.0),
    ({"name": "a", "algorithm": "token_bucket", "rate": 5, "burst": 10}, 10, 2.0),
    ({"name": "a", "algorithm": "token_bucket", "limit": 60, "window": "1m"}, 60, 60.0),
])
def test_valid_limits(data: dict[str, Any], capacity: int, period: float) -> None:
    limit = RateLimit.model_validate(data)
    assert (limit.capacity, limit.period) == (capacity, period)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "a", "limit": 100}, "sliding_window limit needs"),
    ({"name": "a", "rate": 1, "burst": 2}, "sliding_window limit needs"),
    ({"name": "a", "algorithm": "token_bucket", "rate": 1}, "token_bucket limit needs"),
    ({"name": "a", "algorithm": "token_bucket", "limit": 5}, "needs `window`"),
    ({"name": "a", "limit": 5, "window": "1m", "cost": 6}, "never admitted"),
    ({"name": "a", "limit": 5, "window": "1m", "key": "user"}, "unknown key dimension"),
    ({"name": "a", "limit": 5, "window": "1m", "key": "consumer+consumer"}, "twice"),
    ({"name": "a", "limit": 5, "window": "1m", "algorithm": "leaky"}, "algorithm"),
    ({"name": "a b", "limit": 5, "window": "1m"}, "name"),
    ({"name": "a", "limit": 5, "window": "1m", "tiers": ["gold", "gold"]}, "names a tier twice"),
    ({"name": "a", "limit": 5, "window": "1m", "tiers": ["no spaces"]}, "tiers"),
])
def test_invalid_limits(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RateLimit.model_validate(data)


def test_header_key_is_lower_cased_and_names_unique() -> None:
    assert RateLimit.model_validate({"name": "a", "limit": 1, "window": 1, "key": "header:X-Tenant+route"}).key \
        == "header:x-tenant+route"
    with pytest.raises(ValidationError, match="used twice"):
        TrafficPolicy.model_validate({"rate_limits": [{"name": "a", "limit": 1, "window": 1}] * 2})


def test_defaults_keep_existing_fields_and_allow_everyone() -> None:
    policy = TrafficPolicy()
    assert (policy.max_body_bytes, policy.upstream_connect_timeout, policy.upstream_timeout) == (1048576, 5.0, 30.0)
    assert policy.rate_limits == [] and policy.quotas == [] and policy.max_concurrent is None
    assert policy.on_state_error == "closed"
    assert [str(n) for n in policy.ip.allow] == ["0.0.0.0/0", "::/0"]


def _strictness(model: type, name: str) -> tuple[str, list[str] | None]:
    extra = model.model_fields[name].json_schema_extra  # type: ignore[attr-defined]
    return extra["stricter"], extra.get("order")


@pytest.mark.parametrize(("field", "baseline", "declared", "weaker"), [
    ("rate_limits", [{"name": "a", "limit": 5, "window": 60}],
     [{"name": "a", "limit": 5, "window": 60}, {"name": "b", "limit": 1, "window": 1}], False),
    ("rate_limits", [{"name": "a", "limit": 5, "window": 60}], [], True),
    ("rate_limits", [{"name": "a", "limit": 5, "window": 60}], [{"name": "a", "limit": 50, "window": 60}], True),
    ("quotas", [{"name": "q", "limit": 5, "period": "day"}], [], True),
    # tiers: a tier limit only ever adds to the others, so adding one tightens and any change weakens
    ("rate_limits", [{"name": "a", "limit": 5, "window": 60}],
     [{"name": "a", "limit": 5, "window": 60}, {"name": "f", "limit": 1, "window": 60, "tiers": ["free"]}], False),
    ("rate_limits", [{"name": "f", "limit": 1, "window": 60, "tiers": ["free"]}], [], True),
    ("rate_limits", [{"name": "f", "limit": 1, "window": 60, "tiers": ["free"]}],
     [{"name": "f", "limit": 9, "window": 60, "tiers": ["free"]}], True),
    ("rate_limits", [{"name": "f", "limit": 1, "window": 60, "tiers": ["free", "trial"]}],
     [{"name": "f", "limit": 1, "window": 60, "tiers": ["free"]}], True),
    ("rate_limits", [{"name": "f", "limit": 1, "window": 60}],
     [{"name": "f", "limit": 1, "window": 60, "tiers": ["free"]}], True),  # everyone -> one tier
    ("quotas", [{"name": "q", "limit": 5, "period": "day", "tiers": ["free"]}],
     [{"name": "q", "limit": 5, "period": "day", "tiers": ["free"]},
      {"name": "g", "limit": 50, "period": "day", "tiers": ["gold"]}], False),
    ("on_state_error", "closed", "open_local", True),
    ("on_state_error", "open_local", "closed", False),
    ("max_concurrent", 10, 5, False),
    ("max_concurrent", 10, None, True),
])
def test_strictness(field: str, baseline: Any, declared: Any, weaker: bool) -> None:
    stricter, order = _strictness(TrafficPolicy, field)
    base = getattr(TrafficPolicy.model_validate({field: baseline}), field)
    decl = getattr(TrafficPolicy.model_validate({field: declared}), field)
    assert is_weaker(stricter, base, decl, order) is weaker
