"""The pipeline's promises: its order is one literal list, and a stage that raises fails closed — a 500 deny
naming the stage, recorded for the audit event, with no later stage run and nothing forwarded."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest

from bastion import pipeline
from bastion.config.loader import load_config
from bastion.context import CONTINUE, Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.pipeline import PIPELINE, Prepared, prepare, run
from bastion.stages.base import Services
from tests.helpers import BASIC, request, running_gateway


def context() -> RequestContext:
    ctx = RequestContext(method="GET", raw_target="/x", path="/x", query="", headers=[], client_ip="192.0.2.1",
                         request_id="r1", start=0.0)
    ctx.api, ctx.route = "shop", "list-items"
    return ctx


class Stage:
    """A stage that answers `decision`, or raises it when it is an exception."""

    needs_body = False

    def __init__(self, control: str, decision: object) -> None:
        self.control = control
        self.decision = decision
        self.calls = 0

    async def check(self, ctx: RequestContext) -> object:
        self.calls += 1
        if isinstance(self.decision, BaseException):
            raise self.decision
        return self.decision


ALLOW = Continue("class:open/shop/list-items/allow")
REFUSE = Deny(403, "scope_missing", "class:open/shop/list-items/authz")

# (name, the chain's decisions, the deny expected or None, records expected as (control, outcome, reason))
CHAINS = [
    ("all_continue", [CONTINUE, ALLOW], None, [("b", "allow", "")]),
    ("first_deny_ends", [REFUSE, ALLOW], REFUSE, [("a", "deny", "scope_missing")]),
    ("raising_stage_is_a_500_deny", [ALLOW, RuntimeError("bug"), ALLOW],
     ("stage_error", 500, "gateway/shop/list-items/stage.b"), [("a", "allow", ""), ("b", "deny", "stage_error")]),
    ("key_error_too", [KeyError("claims")], ("stage_error", 500, "gateway/shop/list-items/stage.a"), [("a", "deny", "stage_error")]),
]


@pytest.mark.parametrize(("name", "decisions", "expected", "records"), CHAINS, ids=[c[0] for c in CHAINS])
async def test_run_stops_at_the_first_deny_and_a_raising_stage_fails_closed(name, decisions, expected, records):
    chain = tuple(Stage("abc"[i], d) for i, d in enumerate(decisions))
    ctx = context()
    deny = await run(chain, ctx)
    if expected is None:
        assert deny is None
    elif isinstance(expected, Deny):
        assert deny is expected
    else:
        reason, status, policy_id = expected
        assert isinstance(deny, Deny)
        assert (deny.reason, deny.status, deny.policy_id) == (reason, status, policy_id)
        assert "bug" in (deny.log_detail or "") or "claims" in (deny.log_detail or "")  # the operator's reason
        assert deny.detail is None  # the client learns nothing of it
    assert [(r.control, r.outcome, r.reason) for r in ctx.records] == records
    stopped = next((i for i, d in enumerate(decisions) if d is REFUSE or isinstance(d, BaseException)), None)
    for i, stage in enumerate(chain):  # nothing after the deny ran
        assert stage.calls == (0 if stopped is not None and i > stopped else 1)


RAISING = """
gateway:
  audit: {sinks: [{type: file, path: audit.jsonl}]}
"""


async def test_a_raising_stage_through_the_gateway_is_a_500_and_an_audit_event_naming_it(tmp_path):
    config = BASIC.replace("gateway:\n", RAISING.strip() + "\n", 1)
    async with running_gateway(tmp_path, config) as gw:
        route = next(r for r in gw.gateway.compiled.routes if r.info.route == "list-items")
        boom = Stage("boom", RuntimeError("a bug in a control"))
        route.plans[0] = dataclasses.replace(route.plans[0], stages=(boom, *route.plans[0].stages))
        status, headers, body = await request(gw.bound[0][1], "GET", "/shop/items")
        assert boom.calls == 1
        assert status == 500, body  # never the upstream's 200
        assert headers["content-type"] == "application/problem+json"
        assert b"a bug in a control" not in body
        await gw.services.audit.close()  # flush the queue to the file
        await gw.services.audit.start()
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    event = next(e["unmapped"]["bastion"] for e in events if e["unmapped"]["bastion"].get("route") == "list-items")
    assert (event["decision"], event["reason"], event["status"]) == ("deny", "stage_error", 500)
    assert event["upstream_status"] is None  # nothing was forwarded
    assert event["decisions"][-1] == {"control": "boom", "outcome": "deny", "policy": "gateway/shop/list-items/stage.boom",
                                      "reason": "stage_error", "exception_id": None}
    assert "a bug in a control" in event["detail"]


def test_pipeline_order_is_one_literal_list_with_the_response_controls_last():
    sections = [spec.section for spec in PIPELINE]
    # the None between the input stages: business flows (a step counts once its head is valid)
    assert sections == ["transport", "traffic", None, "identity", None, "authz", "traffic", "input", None,
                        "input", "graphql", "authz", "response"]
    assert [spec.phase for spec in PIPELINE].count("response") == 1 and PIPELINE[-1].phase == "response"


def test_prepare_names_each_layer_and_reports_a_layer_that_refuses_the_config(tmp_path):
    path = tmp_path / "bastion.yaml"
    path.write_text(BASIC.replace("{upstream}", "http://127.0.0.1:9") + "consumers:\n  - {name: acme}\n"
                    "  - {name: acme}\n")  # one name twice: the identity layer refuses it
    problems: list[str] = []
    prepared = prepare(load_config(path).model, Services(), problems)
    assert prepared.identity is None and any(p.startswith("identity: ") for p in problems)
    assert prepared.traffic is not None and prepared.response is not None
    assert prepared.lifecycle() == [prepared.traffic, prepared.authz]  # started, checked and closed per config
    assert Prepared().lifecycle() == []


def test_every_pipeline_step_is_typed_wiring_not_a_lookup_by_name():
    prepared = Prepared(traffic=object(), authz=object(), input=object())  # type: ignore[arg-type]
    for spec in PIPELINE:  # each step reads its layer's object through a typed accessor (or needs none)
        if spec.shared is not None:
            spec.shared(prepared)  # an accessor naming a field Prepared does not have would raise here
    assert pipeline.__all__ == ["PIPELINE", "Prepared", "StageSpec", "prepare", "run", "stages"]


# ---- the stage loop and the pipeline's order (issue #16, types half) ----


@dataclass
class Stub:
    """A stage that answers `decision` and counts its calls."""

    control: str
    decision: Decision
    calls: list[str] = field(default_factory=list)

    async def check(self, ctx: RequestContext) -> Decision:
        self.calls.append(ctx.request_id)
        return self.decision


def _ctx() -> RequestContext:
    ctx = RequestContext(method="GET", raw_target="/orders", path="/orders", query="", headers=[],
                         client_ip="192.0.2.1", request_id="r-1", start=0.0)
    ctx.api, ctx.route = "orders", "list"
    return ctx


async def test_allows_are_recorded_with_their_exception_and_a_bare_continue_is_not():
    chain = (Stub("transport", Continue("p-transport")), Stub("blocklist", CONTINUE),
             Stub("identity", Continue("p-identity", exception_id="EXC-1")))
    ctx = _ctx()
    assert await run(chain, ctx) is None
    assert ctx.records == [ControlRecord("transport", "allow", "p-transport", "", None),
                           ControlRecord("identity", "allow", "p-identity", "", "EXC-1")]
    assert all(stage.calls == ["r-1"] for stage in chain)


async def test_the_first_deny_ends_the_request_and_is_recorded():
    deny = Deny(403, "scope_missing", "p-authz", log_detail="needs orders:write")
    later = Stub("traffic", Continue("p-traffic"))
    chain = (Stub("identity", Continue("p-identity")), Stub("authz", deny), later)
    ctx = _ctx()
    assert await run(chain, ctx) is deny
    assert ctx.records == [ControlRecord("identity", "allow", "p-identity", "", None),
                           ControlRecord("authz", "deny", "p-authz", "scope_missing", None)]
    assert later.calls == []


async def test_an_empty_chain_allows():
    ctx = _ctx()
    assert await run((), ctx) is None and ctx.records == []


def test_the_order_is_one_list_network_first_input_last():
    sections = [spec.section for spec in PIPELINE]
    assert sections[:2] == ["transport", "traffic"]
    assert sections.index("identity") < sections.index("authz") < sections.index("input")
    # owner rules on body ids run once the body is valid; only the response controls (on the answer) come after
    assert sections[-2:] == ["authz", "response"]
