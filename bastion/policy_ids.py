"""Policy ids: `<origin>/<api>/<route>/<control>`, built here for every decision the gateway takes.

One spelling lets an audit query find every event of one control (`*/orders/create-order/traffic.max_body_bytes`),
of one exception (`exception:EXC-7/*`) or of one route. The origin says who set the value that decided:

- `class:<name>`: the class baseline; `api` or `route`: the API's or the route's own `policy:` (the id already
  names them); `exception:<id>`: an exception in force; `openapi`: the route's OpenAPI operation;
- `gateway`: the gateway itself (routing, framing, limits, internal errors), where `<api>`/`<route>` are `-`
  until a route is matched;
- `plan`: an allow, decided by the route's plan as a whole (the event lists the exceptions in force).
"""

from __future__ import annotations

import re
from typing import Any

NONE = "-"  # api or route not known yet (the request matched no route)
EXCEPTION = "exception:"

# what a well-formed id looks like; the tests check every deny reason against it
FORMAT = re.compile(r"^(class:[\w.-]+|api|route|exception:[\w.:-]+|openapi|gateway|plan)"
                    r"/[\w.-]+/[\w.:-]+/[a-z][a-z0-9_.-]*$")


def policy_id(origin: str, api: str, route: str, control: str) -> str:
    """`<origin>/<api>/<route>/<control>`; `origin` may be a config source (`route:orders/health`)."""
    return f"{_origin(origin)}/{api or NONE}/{route or NONE}/{control}"


def gateway(control: str, api: str = "", route: str = "") -> str:
    """A decision of the gateway itself, e.g. `gateway/-/-/routing.default_deny`."""
    return policy_id("gateway", api, route, control)


def gateway_at(ctx: Any, control: str) -> str:
    """A decision of the gateway itself on the request `ctx` (its api and route, once matched)."""
    return policy_id("gateway", ctx.api, ctx.route, control)


def of_api(info: Any, control: str) -> str:
    """A control the API's own config sets for all its routes (its upstream, its gRPC limits)."""
    return policy_id("api", info.api, info.route, control)


def of_exception(exception_id: str, ctx: Any, control: str) -> str:
    """A control an exception in force switches off on the request's route."""
    return policy_id(EXCEPTION + exception_id, ctx.api, ctx.route, control)


def plan(api: str, route: str) -> str:
    """The id of an allow: the route's plan in force (`plan/orders/list-orders/allow`)."""
    return policy_id("plan", api, route, "allow")


def body_limit(ctx: Any, plan: Any) -> str:
    """The id of a 413: the route's `traffic.max_body_bytes`, from whoever set it in the plan in force."""
    info = plan.info if plan is not None else None
    if info is None:
        return policy_id("gateway", ctx.api, ctx.route, "traffic.max_body_bytes")
    return str(info.policy_id("traffic.max_body_bytes"))


def exception_of(pid: str) -> str | None:
    """The exception an id names as its origin, or None."""
    if not pid.startswith(EXCEPTION):
        return None
    return pid[len(EXCEPTION):pid.index("/")] if "/" in pid else pid[len(EXCEPTION):]


def _origin(source: str) -> str:
    # `api:orders` and `route:orders/health` would repeat what the id's next parts say
    kind, _, _ = source.partition(":")
    return kind if kind in ("api", "route") else source
