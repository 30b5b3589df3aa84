"""Business flows as conversations: who did which step when, and what the gateway answered."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bastion.context import Deny, Identity, RequestContext
from bastion.stages.base import RouteInfo, Services
from bastion.stages.flows import FlowConfig, build, prepare
from bastion.state import open_state
from bastion.state.memory import MemoryState
from tests.state.redis_server import RedisServer

FLOW = {
    "name": "purchase", "key": "consumer", "max": 6, "per": "1h",
    "steps": [
        {"name": "browse", "route": "shop/list"},
        {"name": "cart", "route": "shop/cart", "after": "browse", "within": "1h"},
        {"name": "checkout", "route": "shop/checkout", "after": "cart", "within": "30m", "min_gap": "2s",
         "max": 2, "per": "1d"},
    ],
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _stages(flow: dict, state, clock: Clock):
    shared = prepare(SimpleNamespace(flows=[FlowConfig.model_validate(flow)]), Services(wall_clock=clock,
                                                                                          state=state))
    return {name: build(None, RouteInfo(api="shop", route=name, klass="public", path=f"/{name}",
                                        methods=frozenset({"GET"})), shared) for name in ("list", "cart", "checkout")}


def _ctx(consumer: str) -> RequestContext:
    ctx = RequestContext(method="GET", raw_target="/", path="/", query="", headers=[], client_ip="127.0.0.1",
                         request_id="r", start=0.0)
    ctx.identity = Identity(method="api_key", consumer=consumer)
    return ctx


# (seconds since the previous line, route, consumer, expected: "ok" or a reason)
HUMAN_AND_SCRIPT = [
    (0, "list", "alice", "ok"),
    (5, "cart", "alice", "ok"),
    (10, "checkout", "alice", "ok"),
    (0, "checkout", "mallory", "flow_order"),  # checkout with no cart at all
    (0, "cart", "mallory", "flow_order"),  # cart without browsing
    (0, "list", "mallory", "ok"),
    (0.1, "cart", "mallory", "ok"),
    (0.1, "checkout", "mallory", "flow_tempo"),  # faster than a human
    (3, "checkout", "mallory", "ok"),
    (5, "cart", "alice", "ok"),
    (5, "checkout", "alice", "ok"),
    (5, "cart", "alice", "ok"),
    (5, "checkout", "alice", "flow_limit"),  # the third checkout of the day
    (31 * 60, "checkout", "mallory", "flow_order"),  # the cart is older than 30 minutes
]


async def _play(stages, clock: Clock, script) -> list[str]:
    seen = []
    for delay, route, consumer, _ in script:
        clock.now += delay
        decision = await stages[route].check(_ctx(consumer))
        seen.append(decision.reason if isinstance(decision, Deny) else "ok")
    return seen


async def test_order_tempo_and_step_limit_per_consumer_in_memory():
    clock = Clock()
    stages = _stages(FLOW, MemoryState(clock), clock)
    assert await _play(stages, clock, HUMAN_AND_SCRIPT) == [line[3] for line in HUMAN_AND_SCRIPT]


async def test_the_same_flow_in_redis_is_shared_by_two_gateways(redis_server: RedisServer):
    clock = Clock()
    clock.now = time.time()  # Redis expires the step marks on its own clock
    one, two = open_state(redis_server.url), open_state(redis_server.url)
    try:
        first, second = _stages(FLOW, one, clock), _stages(FLOW, two, clock)
        assert (await first["list"].check(_ctx("bob"))).__class__ is not Deny
        clock.now += 5
        assert (await second["cart"].check(_ctx("bob"))).__class__ is not Deny  # browse seen by the other
        clock.now += 0.5
        deny = await first["checkout"].check(_ctx("bob"))
        assert isinstance(deny, Deny) and deny.reason == "flow_tempo"
        assert "flow purchase, step checkout" in (deny.log_detail or "")
    finally:
        await one.close()
        await two.close()


async def test_flow_wide_limit_and_flag_mode():
    clock = Clock()
    flagged = {**FLOW, "on_violation": "flag"}
    stages = _stages(flagged, MemoryState(clock), clock)
    ctx = _ctx("carol")
    decision = await stages["checkout"].check(ctx)  # out of order, but only flagged
    assert not isinstance(decision, Deny)
    assert [(r.outcome, r.reason) for r in ctx.records] == [("flag", "flow_order")]
    for _ in range(5):  # the flow allows 6 steps per hour in all: one was the flagged checkout
        clock.now += 1
        assert not isinstance(await stages["list"].check(_ctx("carol")), Deny)
    deny = await stages["list"].check(_ctx("carol"))
    assert isinstance(deny, Deny) and (deny.status, deny.reason) == (429, "flow_limit")
    assert dict(deny.headers)["retry-after"]


@pytest.mark.parametrize(("steps", "message"), [
    ([{"name": "a", "route": "x/a"}, {"name": "a", "route": "x/b"}], "appears twice"),
    ([{"name": "a", "route": "x/a", "after": "b"}, {"name": "b", "route": "x/b"}], "earlier step"),
    ([{"name": "a", "route": "x/a", "min_gap": "1s"}], "min_gap"),
])
def test_invalid_flows_are_config_errors(steps, message):
    with pytest.raises(ValueError, match=message):
        FlowConfig.model_validate({"name": "f", "steps": steps})


def test_a_step_naming_an_unknown_route_fails_validate_at_its_line(tmp_path):
    import textwrap

    from bastion.compile import compile_config
    from bastion.config.loader import ConfigError, load_config

    (tmp_path / "bastion.yaml").write_text(textwrap.dedent("""\
        version: 1
        classes: {public: {identity: {required: false}}}
        apis:
          - {name: shop, owner: a@example.com, class: public, upstream: http://127.0.0.1:9,
             routes: [{name: list, path: /, methods: [GET]}]}
        flows:
          - name: purchase
            steps:
              - {name: browse, route: shop/list}
              - {name: checkout, route: shop/checkuot, after: browse}
        """))
    with pytest.raises(ConfigError) as info:
        compile_config(load_config(tmp_path / "bastion.yaml"), build_stages=False)
    [diag] = info.value.diagnostics
    assert (diag.line, diag.field) == (10, "flows[0].steps[1].route") and "shop/checkuot" in diag.message


async def test_countries_and_reputation_refuse_steps_and_unknown_country_fails_closed(tmp_path):
    from bastion.config.models import BastionConfig
    from tests.stages.signals_data import write_country_db

    (tmp_path / "tor.txt").write_text("192.0.2.66\n")
    write_country_db(tmp_path / "geo.mmdb", {"FR": ["192.0.2.0/24"], "US": ["198.51.100.0/24"]})
    flow = {**FLOW, "countries": ["FR"], "refuse_reputation": ["tor"]}
    config = BastionConfig.model_validate({
        "classes": {"public": {}}, "flows": [flow],
        "gateway": {"signals": {"reputation": {"tor": str(tmp_path / "tor.txt")}, "geoip": str(tmp_path / "geo.mmdb")}},
    })
    clock = Clock()
    shared = prepare(config, Services(wall_clock=clock, state=MemoryState(clock)))
    stage = build(None, RouteInfo(api="shop", route="list", klass="public", path="/", methods=frozenset({"GET"})),
                  shared)
    assert stage is not None

    async def reason(ip: str) -> str:
        ctx = _ctx("dave")
        ctx.client_ip = ip
        decision = await stage.check(ctx)
        return decision.reason if isinstance(decision, Deny) else "ok"

    assert await reason("192.0.2.10") == "ok"
    assert await reason("198.51.100.1") == "flow_client"  # US
    assert await reason("203.0.113.1") == "flow_client"  # unknown to the database
    assert await reason("192.0.2.66") == "flow_client"  # French, but a Tor exit
