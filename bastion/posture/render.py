"""The posture report as Markdown (for pull requests and tickets) and as a self-contained HTML page."""

from __future__ import annotations

import json
from typing import Any

from bastion.posture import html
from bastion.posture.html import span

KPI_LABELS = {
    "baseline_coverage": ("Baseline coverage", "%"),
    "routes": ("Routes", ""),
    "routes_meeting_baseline": ("Routes meeting their baseline", ""),
    "active_exceptions": ("Active exceptions", ""),
    "exceptions_expiring_14d": ("Exceptions expiring within 14 days", ""),
    "expired_exceptions": ("Expired exceptions", ""),
    "routes_without_scopes": ("Routes without scopes", ""),
    "routes_without_owner_rule": ("Routes with an object id and no owner rule", ""),
    "routes_without_rate_limit": ("Routes without a rate limit", ""),
    "denied_requests": ("Denied requests", ""),
    "probe_failures": ("Probe failures", ""),
}


def _delta(report: dict[str, Any], name: str) -> str:
    change = ((report.get("trend") or {}).get("kpis") or {}).get(name)
    if not change or not change["delta"]:
        return "" if not change else "no change"
    sign = "+" if change["delta"] > 0 else ""
    return f"{sign}{change['delta']:g} since previous"


def _value(report: dict[str, Any], name: str) -> str:
    value = report["kpis"][name]
    return f"{value:.1f}%" if name == "baseline_coverage" else str(value)


def markdown(report: dict[str, Any]) -> str:
    out = ["# Bastion posture report", "",
           f"Generated {report['generated']} from `{report['config_file']}` (config hash "
           f"`{report['config_hash']}`).", "", "## KPI snapshot", "", "| KPI | value | trend |", "|---|---|---|"]
    for name in report["kpis"]:
        out.append(f"| {KPI_LABELS.get(name, (name, ''))[0]} | {_value(report, name)} | {_delta(report, name)} |")
    if report.get("denials"):
        d = report["denials"]
        out += ["", f"## Denials by control ({d['from']} to {d['to']}, {d['requests']} requests)", "",
                "| control | denials |", "|---|---|"]
        out += [f"| {control} | {count} |" for control, count in d["by_control"].items()]
    if report.get("probe"):
        p = report["probe"]
        stale = " (probed a different config hash)" if p["stale"] else ""
        out += ["", f"## Last probe{stale}", "", f"{p['time']} against {p['target']}: "
                f"{p['summary']['pass']} passed, {p['summary']['fail']} failed, {p['summary']['skip']} skipped."]
        if p.get("identity"):
            from bastion.posture.probe import identity_line

            line = identity_line(p)
            out += ["", line[0].upper() + line[1:] + "."]
    out += ["", "## Coverage per API", "", "| API | owner | class | routes | meeting baseline | coverage |",
            "|---|---|---|---|---|---|"]
    out += [f"| {a['name']} | {a['owner']} | {a['class']} | {a['routes']} | {a['meeting_baseline']} | "
            f"{a['coverage']:.1f}% |" for a in report["apis"]]
    out += ["", "## Exceptions", "", "| id | target | controls | owner | reason | evidence | expires | days left "
            "| state |", "|---|---|---|---|---|---|---|---|---|"]
    for e in report["exceptions"]:
        target = e["api"] + (f"/{e['route']}" if e["route"] else "")
        soon = " ⚠" if e["expires_soon"] else ""
        out.append(f"| {e['id']} | {target} | {', '.join(e['controls'])} | {e['owner']} | {e['reason']} | "
                   f"{e['evidence']} | {e['expires']} | {e['days_to_expiry']}{soon} | {e['state']} |")
    out += ["", "## Routes", ""]
    for r in report["routes"]:
        status = "meets its class baseline" if r["meets_baseline"] else \
            f"relaxed by exception: {', '.join(r['relaxed_controls'])}"
        out += [f"### {r['route']}  `{' '.join(r['methods'])} {r['path']}`", "",
                f"Class `{r['class']}`, owner {r['owner']}, defined in `{r.get('source', '')}`; {status}."]
        gaps = [g.replace("_", " ") for g, on in r["gaps"].items() if on]
        if gaps:
            out.append(f"Not required by its class, and not set: {', '.join(gaps)}.")
        t = r.get("transport")
        if t is not None:
            listeners = t["tls_listeners"] or {}
            out.append(f"Transport: TLS {t['tls']} (at least {t['min_tls']}; TLS listeners accept "
                       f"{listeners.get('min_version', 'n/a')}+), mTLS {t['mtls']}, client-certificate revocation "
                       f"{t['revocation']}" + (f" ({', '.join(t['revocation_sources'])})" if t["revocation_sources"]
                                               else "") + ".")
        flows = ", ".join(f"{f['flow']} (step {f['step']})" for f in r.get("flows", []))
        out.append(f"Business flows: {flows}." if flows else "Business flows: none (OWASP API6 not answered).")
        if r["probe"] is not None:
            out.append(f"Probe: {r['probe']['pass']} passed, {r['probe']['fail']} failed, "
                       f"{r['probe']['skip']} skipped.")
        out += ["", "| control | value | source |", "|---|---|---|"]
        out += [f"| {c} | `{json.dumps(e['value'])}` | {e['source']} |" for c, e in r["controls"].items()]
        out += ["", "OWASP API Top 10 (2023): " + "; ".join(
            f"{html_free(cat, report)} ({', '.join(ctrls)})" for cat, ctrls in r["owasp"].items()), ""]
        out += [f"- `{c}`: {why}" for c, why in r.get("owasp_why", {}).items()] + [""]
    return "\n".join(out) + "\n"


def html_free(category: str, report: dict[str, Any]) -> str:
    return f"{category} {report['owasp_categories'].get(category, '')}"


def kpi_cards(report: dict[str, Any]) -> str:
    return '<div class="kpis">' + "".join(
        html.kpi(name, _value(report, name), KPI_LABELS.get(name, (name, ""))[0], _delta(report, name))
        for name in report["kpis"]) + "</div>"


def exceptions_table(report: dict[str, Any]) -> str:
    rows = []
    for e in report["exceptions"]:
        state = span(e["state"], {"active": "warn", "expired": "bad"}.get(e["state"], "muted"))
        days = span(e["days_to_expiry"], "bad") if e["expires_soon"] else e["days_to_expiry"]
        rows.append((e["id"], e["api"] + (f"/{e['route']}" if e["route"] else ""), ", ".join(e["controls"]),
                     e["owner"], e["reason"], e["evidence"], e["expires"], days, state))
    return html.table(("id", "target", "controls", "owner", "reason", "evidence", "expires", "days left", "state"),
                      rows, test_id="exceptions")


def coverage_table(report: dict[str, Any]) -> str:
    rows = [(a["name"], a["owner"], a["class"], a["routes"], a["meeting_baseline"], html.bar(a["coverage"]))
            for a in report["apis"]]
    return html.table(("API", "owner", "class", "routes", "meeting baseline", "coverage"), rows, test_id="coverage")


def denials_table(report: dict[str, Any]) -> str:
    d = report.get("denials")
    if not d:
        return '<p class="muted">No audit events given.</p>'
    return (f'<p class="muted">{d["requests"]} requests from {d["from"]} to {d["to"]}</p>'
            + html.table(("control", "denials"), d["by_control"].items(), test_id="denials"))


def routes_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["routes"]:
        base = span("yes", "ok") if r["meets_baseline"] else span("relaxed: " + ", ".join(r["relaxed_controls"]),
                                                                  "warn")
        gaps = ", ".join(g.replace("no_", "no ").replace("_", " ") for g, on in r["gaps"].items() if on)
        probe = None
        route: Any = r["route"]
        if r["probe"] is not None:
            when = (report.get("probe") or {}).get("time", "")
            probe = span(f"{r['probe']['fail']} failed, {r['probe']['pass']} passed ({when})", "bad") \
                if r["probe"]["fail"] else span(f"{r['probe']['pass']} passed ({when})", "ok")
            if r["probe"]["fail"]:  # an attack the policy promises to refuse got through: the route is red
                route = span(r["route"], "bad")
        rows.append((route, f"{' '.join(r['methods'])} {r['path']}", r["class"], r["owner"], base, gaps,
                     " ".join(r["owasp"]), probe))
    return html.table(("route", "request", "class", "owner", "baseline", "not set (class did not require)",
                       "OWASP API 2023", "probe"), rows, test_id="routes")


def controls_section(report: dict[str, Any]) -> str:
    parts = []
    for r in report["routes"]:
        rows = [(c, html.Raw(f"<code>{html.cell(json.dumps(e['value']))}</code>"), e["source"])
                for c, e in r["controls"].items()]
        why = html.table(("credited control", "OWASP API 2023", "why"),
                         [(c, " ".join(k for k, cs in r["owasp"].items() if c in cs), w)
                          for c, w in r.get("owasp_why", {}).items()])
        parts.append(f"<h3>{html.cell(r['route'])}</h3>" + html.table(("control", "value", "source"), rows) + why)
    return "".join(parts)


def to_html(report: dict[str, Any]) -> bytes:
    probe = ""
    if report.get("probe"):
        p = report["probe"]
        probe = (f"<h2>Last probe</h2><p>{html.cell(p['time'])} against {html.cell(p['target'])}: "
                 f"{p['summary']['pass']} passed, {p['summary']['fail']} failed, {p['summary']['skip']} skipped"
                 f"{' (a different config hash was probed)' if p['stale'] else ''}.</p>")
    owasp = html.table(("category", "name"), report["owasp_categories"].items())
    body = (kpi_cards(report) + probe + "<h2>Coverage per API</h2>" + coverage_table(report)
            + "<h2>Exceptions</h2>" + exceptions_table(report) + "<h2>Denials by control</h2>"
            + denials_table(report) + "<h2>Routes</h2>" + routes_table(report)
            + "<h2>OWASP API Security Top 10 (2023)</h2>" + owasp
            + "<h2>Effective controls per route</h2>" + controls_section(report))
    return html.page("Bastion posture report", body,
                     subtitle=f"generated {report['generated']} · config {report['config_hash']}")
