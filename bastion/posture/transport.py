"""Per route: the TLS policy in force, whether client-certificate revocation is checked, which flows protect it.

`validate` guarantees every TLS listener meets each class's TLS demand, so the policy in force on a route is its
demand, and the weakest TLS listener shows what a handshake may still negotiate. OWASP API6 (sensitive
business flows) is credited only where a flow has a step on the route: a plain rate limit does not know a flow.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography import x509

from bastion.compile import CompiledGateway
from bastion.config.models import BastionConfig
from bastion.posture.controls import plan_at, section
from bastion.stages.transport.crl import CrlStore

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


def gateway_transport(cfg: BastionConfig, now: float) -> dict[str, Any]:
    """The gateway-wide facts behind the per-route transport columns: each listener's TLS offer, the
    client-certificate revocation sources with each CRL file's state at `now`, and every flow's steps."""
    listeners = []
    for lst in cfg.gateway.listeners:
        tls = lst.tls
        listeners.append({
            "listener": f"{lst.address}:{lst.port}", "tls": tls is not None,
            "versions": None if tls is None else ("TLS 1.3" if tls.min_version == "1.3" else "TLS 1.2, TLS 1.3"),
            "client_certificate": None if tls is None else tls.client_cert,
            "client_ca": None if tls is None or tls.client_ca is None else str(tls.client_ca),
            "session_tickets": None if tls is None else tls.session_tickets,
            "alpn": None if tls is None else (tls.alpn or (["h2", "http/1.1"] if lst.http2 else ["http/1.1"])),
        })
    flows = [{"flow": flow.name, "key": flow.key, "on_violation": flow.on_violation,
              "steps": [{"step": step.name, "route": step.route, "after": step.after,
                         "within": step.within if step.after else None, "max": step.max,
                         "per": step.per if step.max else None} for step in flow.steps]}
             for flow in cfg.flows]
    return {"listeners": listeners, "revocation": revocation_status(cfg, now), "flows": flows}


def revocation_status(cfg: BastionConfig, now: float) -> dict[str, Any]:
    """OCSP on or off (and whose responder), and each CRL file read and verified as the gateway does, judged at
    `now`: fresh, stale (past next_update plus the grace: it answers nothing) or unusable."""
    config = cfg.gateway.revocation
    issuers: list[x509.Certificate] = []
    problems = []
    for path in config.issuers:
        try:
            issuers += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            problems.append(f"issuer {path}: {exc}")
    store = CrlStore(list(config.crls), issuers, grace=config.grace, reload_interval=config.reload_interval,
                     wall_clock=lambda: now, monotonic=time.monotonic)
    return {"ocsp": config.ocsp,
            "ocsp_responder": (config.ocsp_responder or "each certificate's AIA") if config.ocsp else None,
            "grace": config.grace, "issuers": len(issuers), "problems": problems, "crls": store.files()}
