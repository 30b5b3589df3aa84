"""The stage loop: the first Deny ends the request, and every decision that names a policy is recorded.

(The raising stage, answered with a 500 deny, is pinned by the request-path tests of issue #16's other half.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.context import CONTINUE, Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.pipeline import PIPELINE, run


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
    assert sections[-1] == "authz"  # owner rules on body ids run once the body is valid
