"""Per route: the TLS policy in force, whether client-certificate revocation is checked, which flows protect it.

`validate` guarantees every TLS listener meets each class's TLS demand, so the policy in force on a route is its
demand, and the weakest TLS listener shows what a handshake may still negotiate. OWASP API6 (sensitive
business flows) is credited only where a flow has a step on the route: a plain rate limit does not know a flow.
"""

from __future__ import annotations

from typing import Any

from bastion.compile import CompiledGateway
from bastion.posture.controls import plan_at, section

_API6 = "API6:2023"


def annotate(routes: list[dict[str, Any]], compiled: CompiledGateway, now: float) -> None:
    """Add `transport` and `flows` to each route document, and the API6 credit where a flow applies.

    The transport section is read from the plan in force at `now`, like every other fact of the report."""
    cfg = compiled.config.model
    listeners = [lst.tls for lst in cfg.gateway.listeners if lst.tls is not None]
    weakest = None
    if listeners:
        weakest = {
            "min_version": min(t.min_version for t in listeners),
            "session_tickets": any(t.session_tickets for t in listeners),
            "ciphers": sorted({c for t in listeners if t.min_version == "1.2" for c in t.ciphers}),
            "groups": sorted({g for t in listeners for g in (t.groups or ["openssl-default"])}),
        }
    steps: dict[str, list[dict[str, str]]] = {}
    for flow in cfg.flows:
        for step in flow.steps:
            steps.setdefault(step.route, []).append({"flow": flow.name, "step": step.name})
    revocation = cfg.gateway.revocation
    sources = (["crl"] if revocation.crls else []) + (["ocsp"] if revocation.ocsp else [])
    by_id = {r.info.route_id: r for r in compiled.routes}
    for doc in routes:
        route = by_id[doc["route"]]
        transport = section(plan_at(route, now), "transport")
        doc["transport"] = None if transport is None else {
            "tls": transport.tls, "mtls": transport.mtls, "min_tls": transport.min_tls,
            "session_resumption": transport.session_resumption, "revocation": transport.revocation,
            "revocation_sources": sources if transport.revocation != "off" else [],
            "tls_listeners": weakest,
        }
        doc["flows"] = steps.get(doc["route"], [])
        owasp = doc["owasp"]
        if doc["flows"]:
            owasp.setdefault(_API6, []).append("flows")
            doc.setdefault("owasp_why", {})["flows"] = "a business flow bounds the order, tempo and volume of its steps"
        elif _API6 in owasp:
            del owasp[_API6]  # rate limits alone do not defend a business flow
        doc["owasp"] = dict(sorted(owasp.items(), key=lambda kv: int(kv[0][3:].split(":")[0])))
