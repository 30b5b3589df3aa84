"""The dashboard's pictures: the route x control matrix, the exceptions timeline, denials over time.

Pure functions of the report (`report.build`): HTML strings with inline styles only, no script, no external
resource. Every cell's state comes from the report's facts at its instant, never from the config alone.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from bastion import policy_ids
from bastion.posture import html
from bastion.posture.report import DAY

# (column, the control ids it stands for, the gap that means "missing" when its class did not require it)
COLUMNS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("TLS", ("transport.tls", "transport.mtls"), None),
    ("identity", ("identity.required", "identity.require_consumer"), None),
    ("scopes", ("authz.scopes",), "no_scopes"),
    ("owner", ("authz.owner",), "no_owner_rule"),
    ("rate limit", ("traffic.rate_limits", "traffic.quotas"), "no_rate_limit"),
    ("body limit", ("traffic.max_body_bytes",), None),
    ("contract", ("input.contract", "input.undeclared"), None),
    ("inspection", ("input.inspection",), None),
)
COLOURS = {"enforced": "#2f7d46", "relaxed": "#c98a00", "not required": "#9aa5b1", "missing": "#b3261e"}
# columns whose state is not "credited or not" but read from the route's transport and flows facts
DERIVED = ("revocation", "flows")


def revocation_state(route: dict[str, Any]) -> tuple[str, str, str | None, str]:
    """(state, policy id, exception, detail) of the client-certificate revocation cell: checked (soft or hard,
    from CRLs and/or OCSP); missing where the route requires client certificates but checks no revocation."""
    control = "transport.revocation"
    source = str(route["controls"].get(control, {}).get("source", f"class:{route['class']}"))
    pid = policy_ids.policy_id(source, route["api"], route["name"], control)
    transport = route.get("transport") or {}
    mode = transport.get("revocation", "off")
    detail = f"{mode} ({', '.join(transport.get('revocation_sources') or []) or 'no source'})"
    if source.startswith(policy_ids.EXCEPTION):
        return "relaxed", pid, source[len(policy_ids.EXCEPTION):], detail
    if mode != "off":
        return "enforced", pid, None, detail
    return ("missing" if transport.get("mtls") == "required" else "not required"), pid, None, detail


def flows_state(route: dict[str, Any]) -> tuple[str, str, str | None, str]:
    """(state, policy id, exception, detail) of the business-flow cell: enforced where a flow has a step on the
    route (the id the flow stage writes in its audit events), else not required (no class demands a flow)."""
    flows = route.get("flows") or []
    if not flows:
        return "not required", policy_ids.policy_id(f"class:{route['class']}", route["api"], route["name"],
                                                   "flows"), None, "no flow"
    first = flows[0]
    pid = f"flow:{first['flow']}/{route['route']}/flows.{first['step']}"
    return "enforced", pid, None, ", ".join(f"{f['flow']} (step {f['step']})" for f in flows)


def cell_state(route: dict[str, Any], controls: tuple[str, ...], gap: str | None) -> tuple[str, str, str | None]:
    """(state, the deciding policy id, the exception) of one matrix cell."""
    for control in controls:
        source = str(route["controls"].get(control, {}).get("source", ""))
        if control in route["relaxed_controls"] or source.startswith(policy_ids.EXCEPTION):
            exception = source[len(policy_ids.EXCEPTION):] if source.startswith(policy_ids.EXCEPTION) else None
            return "relaxed", policy_ids.policy_id(source, route["api"], route["name"], control), exception
    why = route.get("owasp_why", {})
    for control in controls:
        if control in why:
            source = str(route["controls"].get(control, {}).get("source", f"class:{route['class']}"))
            return "enforced", policy_ids.policy_id(source, route["api"], route["name"], control), None
    first = controls[0]
    source = str(route["controls"].get(first, {}).get("source", f"class:{route['class']}"))
    state = "missing" if gap is not None and route["gaps"].get(gap) else "not required"
    return state, policy_ids.policy_id(source, route["api"], route["name"], first), None


def route_link(route_id: str) -> str:
    return f"/dashboard/route?id={quote(route_id, safe='/')}"


def matrix(report: dict[str, Any]) -> str:
    """One row per route, one cell per control group, coloured by state, linking to the route's drill-down
    (and to the exception that relaxes it)."""
    head = "".join(f"<th>{escape(name)}</th>" for name in (*(c[0] for c in COLUMNS), *DERIVED))
    rows = []
    for route in report["routes"]:
        states = [(*cell_state(route, controls, gap), "") for _, controls, gap in COLUMNS]
        states += [revocation_state(route), flows_state(route)]
        cells = []
        for state, pid, exception, detail in states:
            target = f"/dashboard/exceptions#{quote(exception)}" if exception else route_link(route["route"])
            title = f"{pid} · {detail}" if detail else pid
            cells.append(f'<td data-state="{state}" data-policy="{escape(pid)}" title="{escape(title)}" '
                         f'style="background:{COLOURS[state]};color:#fff;text-align:center">'
                         f'<a style="color:#fff" href="{escape(target)}">{escape(exception or state)}</a></td>')
        name = html.cell(route["route"])
        rows.append(f'<tr data-route="{escape(route["route"])}"><th><a href="{escape(route_link(route["route"]))}">'
                    f"{name}</a></th>{''.join(cells)}</tr>")
    legend = " ".join(f'<span style="background:{c};color:#fff;padding:1px 6px;border-radius:3px">{s}</span>'
                      for s, c in COLOURS.items())
    return (f"<p>{legend}</p><table data-test=\"matrix\"><thead><tr><th>route</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def timeline(report: dict[str, Any], now: float) -> str:
    """Each exception as a bar from creation to expiry on one time axis, with today marked."""
    from datetime import datetime

    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    spans = [(e, ts(e["created"]), ts(e["expires"])) for e in report["exceptions"]]
    if not spans:
        return '<p class="muted">No exceptions.</p>'
    start = min(min(s for _, s, _ in spans), now) - DAY
    end = max(max(x for _, _, x in spans), now) + DAY
    scale = 100.0 / (end - start)
    today = (now - start) * scale
    rows = []
    for exc, created, expires in spans:
        left, width = (created - start) * scale, max((expires - created) * scale, 0.5)
        colour = {"active": COLOURS["relaxed"], "expired": COLOURS["not required"]}.get(exc["state"], "#5b7fa6")
        label = f"{exc['id']} · {exc['owner']} · " + (f"{exc['days_to_expiry']} days left"
                                                       if exc["state"] != "expired" else "expired")
        rows.append(
            f'<div data-exception="{escape(exc["id"])}" data-days="{exc["days_to_expiry"]}" '
            f'style="position:relative;height:26px;margin:4px 0;background:#fff;border:1px solid #d9dee3">'
            f'<div style="position:absolute;left:{left:.2f}%;width:{width:.2f}%;top:3px;bottom:3px;'
            f'background:{colour};border-radius:3px"></div>'
            f'<span id="{escape(exc["id"])}" style="position:relative;padding-left:6px;font-size:12px">'
            f"{escape(label)}</span>"
            f'<div style="position:absolute;left:{today:.2f}%;top:0;bottom:0;border-left:2px solid #1d2329"></div>'
            "</div>")
    return f'<div data-test="timeline">{"".join(rows)}</div><p class="muted">The dark line is now.</p>'


def denials_over_time(report: dict[str, Any]) -> str:
    """Denials per hour by reason (from the audit log), as stacked bars."""
    series: dict[str, dict[str, int]] = (report.get("denials") or {}).get("by_hour") or {}
    if not series:
        return '<p class="muted">No denials in the audit log.</p>'
    peak = max(sum(v.values()) for v in series.values()) or 1
    reasons = sorted({r for v in series.values() for r in v})
    palette = ["#b3261e", "#c98a00", "#5b7fa6", "#6a4c93", "#2f7d46", "#8a5a00", "#1d6f8a", "#9aa5b1"]
    colour = {r: palette[i % len(palette)] for i, r in enumerate(reasons)}
    rows = []
    for hour, counts in sorted(series.items()):
        bars = "".join(f'<i title="{escape(r)}: {n}" style="display:inline-block;height:12px;'
                       f'width:{240 * n / peak:.1f}px;background:{colour[r]}"></i>' for r, n in sorted(counts.items()))
        rows.append(f'<tr data-hour="{escape(hour)}"><td>{escape(hour)}</td><td>{sum(counts.values())}</td>'
                    f"<td>{bars}</td></tr>")
    legend = " ".join(f'<span style="color:{c}">■</span> {escape(r)}' for r, c in colour.items())
    return (f"<p>{legend}</p><table data-test=\"denials-over-time\"><thead><tr><th>hour (UTC)</th><th>denials</th>"
            f"<th>by reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
