"""Wiring of the traffic layer to a whole config: consumer tiers from `consumers:`, the validate warnings about
tiers, and a route that drops a class's tier limit reported as a weakening."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bastion.compile import compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.context import Continue, Deny
from bastion.stages import traffic
from bastion.stages.base import Services
from bastion.stages.traffic.ratelimit import RateLimitStage
from tests.stages.traffic.support import request

CONFIG = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
consumers:
  - {name: acme, tier: gold}
  - {name: tiny, tier: free}
  - {name: typo, tier: fre}
  - {name: plain}
classes:
  partner:
    identity: {required: false}
    traffic:
      rate_limits:
        - {name: per-consumer, limit: 100, window: 1m}
        - {name: free, limit: 1, window: 1m, tiers: [free]}
apis:
  - name: orders
    owner: team@example.com
    class: partner
    upstream: http://127.0.0.1:9
    routes:
      - name: export
        path: /export
        methods: [GET]
        policy:
          traffic:
            rate_limits:
              - {name: per-consumer, limit: 100, window: 1m}
              - {name: free, limit: 1, window: 1m, tiers: [free]}
              - {name: platinum-export, limit: 1, window: 1h, tiers: [platinum]}
"""


def load(tmp_path: Path, text: str = CONFIG):  # type: ignore[no-untyped-def]
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


def test_prepare_maps_consumers_to_their_tiers(tmp_path: Path) -> None:
    shared = traffic.prepare(load(tmp_path).model, Services())
    assert shared.consumer_tiers == {"acme": "gold", "tiny": "free", "typo": "fre"}


def test_tier_warnings_name_typos_and_unused_tiers(tmp_path: Path) -> None:
    assert traffic.tier_warnings(load(tmp_path).model) == [
        "consumer 'acme' has tier 'gold', which no rate limit or quota names: it gets the untiered limits only",
        "consumer 'typo' has tier 'fre', which no rate limit or quota names: it gets the untiered limits only",
        "traffic tiers platinum are named by limits but no consumer has them",
    ]


async def test_compiled_route_charges_the_consumers_tier(tmp_path: Path) -> None:
    compiled = compile_config(load(tmp_path), Services())
    stage = next(s for s in compiled.routes[0].plans[0].stages if isinstance(s, RateLimitStage))
    assert isinstance(await stage.check(request(consumer="tiny")), Continue)
    denied = await stage.check(request(consumer="tiny"))
    assert isinstance(denied, Deny) and denied.log_detail is not None and denied.log_detail.startswith("free (")
    for consumer in ("typo", "plain", "acme"):
        assert isinstance(await stage.check(request(consumer=consumer)), Continue)
        assert isinstance(await stage.check(request(consumer=consumer)), Continue)


@pytest.mark.parametrize("declared", [
    "[{name: per-consumer, limit: 100, window: 1m}]",  # the tier limit dropped
    "[{name: per-consumer, limit: 100, window: 1m}, {name: free, limit: 50, window: 1m, tiers: [free]}]",
    "[{name: per-consumer, limit: 100, window: 1m}, {name: free, limit: 1, window: 1m, tiers: [trial]}]",
])
def test_a_route_loosening_a_tier_limit_is_a_weakening(tmp_path: Path, declared: str) -> None:
    text = CONFIG.split("        policy:")[0] + f"        policy: {{traffic: {{rate_limits: {declared}}}}}\n"
    with pytest.raises(ConfigError) as info:
        compile_config(load(tmp_path, text), Services())
    [diagnostic] = [d for d in info.value.diagnostics if d.severity == "error"]
    assert diagnostic.field.startswith("apis[0].routes[0].policy.traffic.rate_limits")
    assert "route orders/export sets traffic.rate_limits = " in diagnostic.message
    assert "weaker than its class 'partner'" in diagnostic.message
