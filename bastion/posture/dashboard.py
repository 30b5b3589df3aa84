"""The admin dashboard: server-rendered pages as pure functions of the posture data, returning HTML bytes.

No JavaScript and no external resource: the pages work in any browser and behind any content security policy.
The admin listener mounts `render(path, data)` under `/dashboard` (behind `AdminAuth`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.posture import html, matrix
from bastion.posture import render as report_render
from bastion.posture.auditlog import RequestEvent
from bastion.posture.html import span
from bastion.posture.report import iso

PREFIX = "/dashboard"
NAV: tuple[tuple[str, str], ...] = (
    (PREFIX, "Overview"), (f"{PREFIX}/matrix", "Matrix"), (f"{PREFIX}/routes", "Routes"),
    (f"{PREFIX}/exceptions", "Exceptions"), (f"{PREFIX}/transport", "TLS & flows"),
    (f"{PREFIX}/denials", "Denials"), (f"{PREFIX}/blocks", "Blocks"), (f"{PREFIX}/shadow", "Shadow endpoints"),
)
RECENT = 50


@dataclass(slots=True)
class DashboardData:
    """What the pages show: the report (`report.build`), the inventory (`inventory.build`, optional), the
    state backend's active blocks, and the most recent denied request events."""

    report: dict[str, Any]
    inventory: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)  # {key, reason, until (epoch s), source}
    recent_denials: Sequence[RequestEvent] = ()


def _page(title: str, body: str, data: DashboardData, current: str) -> bytes:
    report = data.report
    return html.page(f"Bastion · {title}", body, nav=NAV, current=current,
                     subtitle=f"config {report['config_hash']} · generated {report['generated']}")


def overview(data: DashboardData) -> bytes:
    report = data.report
    soon = [e for e in report["exceptions"] if e["state"] == "active"]
    soon.sort(key=lambda e: e["expires"])
    rows = [(e["id"], e["api"] + (f"/{e['route']}" if e["route"] else ""), e["owner"], e["expires"],
             span(e["days_to_expiry"], "bad") if e["expires_soon"] else e["days_to_expiry"]) for e in soon]
    body = (report_render.kpi_cards(report) + "<h2>Coverage per API</h2>" + report_render.coverage_table(report)
            + "<h2>Active exceptions by expiry</h2>"
            + html.table(("id", "target", "owner", "expires", "days left"), rows, test_id="expiring"))
    return _page("Overview", body, data, PREFIX)


def routes(data: DashboardData) -> bytes:
    return _page("Routes", report_render.routes_table(data.report), data, f"{PREFIX}/routes")


def exceptions(data: DashboardData) -> bytes:
    body = ("<h2>Timeline</h2>" + matrix.timeline(data.report, _now(data.report))
            + "<h2>All exceptions</h2>" + report_render.exceptions_table(data.report))
    return _page("Exceptions", body, data, f"{PREFIX}/exceptions")


def control_matrix(data: DashboardData) -> bytes:
    body = ("<p>Each route and control at this instant: enforced, relaxed by an exception, not required by the "
            "class, or missing. A cell links to the exception that relaxes it, else to the route.</p>"
            + matrix.matrix(data.report))
    return _page("Route x control matrix", body, data, f"{PREFIX}/matrix")


def route_detail(data: DashboardData, route_id: str) -> bytes | None:
    route = next((r for r in data.report["routes"] if r["route"] == route_id), None)
    if route is None:
        return None
    one = {**data.report, "routes": [route]}
    mine = [e for e in data.recent_denials if f"{e.api}/{e.route}" == route_id]
    rows = [(iso(e.time), e.control, e.reason, f"{e.method} {e.path}", e.caller or e.client_ip) for e in mine]
    body = (matrix.matrix(one) + report_render.routes_table(one) + report_render.controls_section(one)
            + "<h2>Recent denials on this route</h2>"
            + html.table(("time", "control", "reason", "request", "caller"), rows, test_id="route-denials"))
    return _page(f"Route {route_id}", body, data, f"{PREFIX}/matrix")


def _yes(value: Any) -> Any:
    return None if value is None else ("yes" if value else "no")


def transport(data: DashboardData) -> bytes:
    """Each listener's TLS offer, each route's TLS, mTLS and revocation, each CRL's state, each flow's steps."""
    report = data.report
    listeners = [(x["listener"], span("TLS", "ok") if x["tls"] else span("plaintext", "warn"), x["versions"],
                  x["client_certificate"], x["client_ca"], _yes(x["session_tickets"]),
                  ", ".join(x["alpn"]) if x["alpn"] else None) for x in report.get("listeners", [])]
    routes = []
    for r in report["routes"]:
        t = r.get("transport") or {}
        routes.append((html.Raw(f'<a href="{html.cell(matrix.route_link(r["route"]))}">{html.cell(r["route"])}</a>'),
                       t.get("tls"), t.get("min_tls"), t.get("mtls"), t.get("revocation"),
                       ", ".join(t.get("revocation_sources") or []), _yes(t.get("session_resumption")),
                       ", ".join(f"{f['flow']}/{f['step']}" for f in r.get("flows", []))))
    revocation = report.get("revocation") or {}
    crls = [(c["file"], c.get("issuer"), iso(float(c["next_update"])) if c.get("next_update") else None,
             c.get("revoked"), span(c["state"], "ok" if c["state"] == "fresh" else "bad"), c.get("reason"))
            for c in revocation.get("crls", [])]
    ocsp = (f"OCSP on, responder: {revocation.get('ocsp_responder')}" if revocation.get("ocsp") else "OCSP off")
    flows = [(f["flow"], s["step"], s["route"], s["after"], s["within"], f"{s['max']} per {s['per']:.0f}s"
              if s["max"] else None, f["key"], f["on_violation"])
             for f in report.get("flows", []) for s in f["steps"]]
    body = ("<h2>Listeners</h2>" + html.table(("listener", "TLS", "versions", "client certificate", "client CA",
                                               "session tickets", "ALPN"), listeners, test_id="listeners")
            + "<h2>TLS, mTLS and revocation per route</h2>"
            + html.table(("route", "TLS", "min TLS", "mTLS", "revocation", "sources", "resumption", "flows"),
                         routes, test_id="route-tls")
            + f'<h2>Client-certificate revocation</h2><p data-test="ocsp">{html.cell(ocsp)}; '
            f"{revocation.get('issuers', 0)} issuer certificate(s); answers used up to "
            f"{float(revocation.get('grace', 0)):.0f}s past their next update.</p>"
            + html.table(("CRL file", "issuer", "next update", "revoked", "state", "problem"), crls, test_id="crls")
            + "<h2>Business flows (OWASP API6)</h2>"
            + html.table(("flow", "step", "route", "after", "within (s)", "at most", "key", "on violation"), flows,
                         test_id="flows"))
    return _page("TLS, revocation and flows", body, data, f"{PREFIX}/transport")


def _now(report: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(report["generated"]).replace("Z", "+00:00")).timestamp()


def denials(data: DashboardData) -> bytes:
    recent = sorted(data.recent_denials, key=lambda e: e.time, reverse=True)[:RECENT]
    counts = Counter(e.control or "unknown" for e in data.recent_denials)
    rows = [(iso(e.time), e.control, e.reason, f"{e.method} {e.path}", e.caller or e.client_ip) for e in recent]
    body = ("<h2>Denials over time, by reason</h2>" + matrix.denials_over_time(data.report)
            + "<h2>Denials by control (report period)</h2>" + report_render.denials_table(data.report)
            + "<h2>Recent denials by control</h2>"
            + html.table(("control", "denials"), counts.most_common(), test_id="recent-by-control")
            + f"<h2>Last {len(rows)} denied requests</h2>"
            + html.table(("time", "control", "reason", "request", "caller"), rows, test_id="recent"))
    return _page("Denials", body, data, f"{PREFIX}/denials")


def blocks(data: DashboardData) -> bytes:
    rows = [(b.get("key"), b.get("reason"), iso(float(b["until"])) if b.get("until") else "until removed",
             b.get("source")) for b in data.blocks]
    body = (f"<p>{len(rows)} active block(s).</p>"
            + html.table(("blocked", "reason", "until", "source"), rows, test_id="blocks"))
    return _page("Active blocks", body, data, f"{PREFIX}/blocks")


def shadow(data: DashboardData) -> bytes:
    inv = data.inventory
    if inv is None:
        body = '<p class="muted">No audit events: give the gateway an audit file sink.</p>'
    else:
        rows = [(s["request"], s["count"], s["first_seen"], s["last_seen"], ", ".join(s["callers"]))
                for s in inv["shadow"]]
        idle = [(r["route"], r["owner"], r["last_request"]) for r in inv["routes"] if r["idle"]]
        body = ("<h2>Undeclared paths still called</h2>"
                + html.table(("request (template)", "count", "first seen", "last seen", "callers"), rows,
                             test_id="shadow")
                + f"<h2>Routes without traffic for {inv['idle_days']} days</h2>"
                + html.table(("route", "owner", "last request"), idle, test_id="idle"))
    return _page("Shadow endpoints", body, data, f"{PREFIX}/shadow")


PAGES: dict[str, Callable[[DashboardData], bytes]] = {
    PREFIX: overview, f"{PREFIX}/": overview, f"{PREFIX}/routes": routes, f"{PREFIX}/exceptions": exceptions,
    f"{PREFIX}/matrix": control_matrix, f"{PREFIX}/transport": transport,
    f"{PREFIX}/denials": denials, f"{PREFIX}/blocks": blocks, f"{PREFIX}/shadow": shadow,
}


def render(path: str, data: DashboardData) -> bytes | None:
    """The page at `path` (query ignored but for a route's `?id=`), or None when there is no such page."""
    base, _, query = path.partition("?")
    if base == f"{PREFIX}/route":
        from urllib.parse import parse_qs

        route_id = (parse_qs(query).get("id") or [""])[0]
        return route_detail(data, route_id)
    page = PAGES.get(base)
    return None if page is None else page(data)
