"""The admin dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): each
page opens, and the figures shown are the report's JSON figures. Screenshots go to tests/posture/artifacts/; the
pictures are compared with tests/posture/baselines/ (tests/posture/visual.py says how, and how to refresh them)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from PIL import Image
from playwright.async_api import Page, async_playwright

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import auditlog, dashboard, inventory, matrix
from bastion.posture.dashboard import DashboardData
from bastion.posture.report import build
from tests.posture.conftest import demo_config
from tests.posture.test_inventory import _events
from tests.posture.test_report import config_with_exceptions
from tests.posture.visual import BASELINES, GEOMETRY_CSS, ISOLATE_JS, colour_at, compare, hex_rgb

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def _data(tmp_path: Path, at: datetime | None = None) -> DashboardData:
    """The dashboard's data for the demo with two more exceptions; at the wall clock, or at `at` for pictures
    that must not change from one run to the next."""
    compiled = compile_config(load_config(config_with_exceptions(tmp_path, at)), build_stages=False,
                              now=at.timestamp() if at else None)
    now = at.timestamp() if at else time.time()
    events = list(auditlog.requests(_events(now)))
    return DashboardData(
        report=build(compiled, now, events=events),
        inventory=inventory.build(compiled, events, now),
        blocks=[{"key": "ip:203.0.113.9", "reason": "credential stuffing", "until": now + 3600,
                 "source": "detection:auth-failures"}],
        recent_denials=[e for e in events if e.decision == "deny"],
    )


async def _serve(data: DashboardData) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        path = head.split(" ", 2)[1]
        body = dashboard.render(path, data)
        status = b"200 OK" if body is not None else b"404 Not Found"
        body = body or b"not found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.fixture
async def browser_page() -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        yield page
        await browser.close()
        assert all(url.startswith("http://127.0.0.1:") for url in requests), requests  # nothing external


async def _cells(page: Page, test_id: str) -> list[list[str]]:
    rows = page.locator(f'table[data-test="{test_id}"] tbody tr')
    return [[c.strip() for c in await rows.nth(i).locator("td").all_inner_texts()]
            for i in range(await rows.count())]


async def test_dashboard_pages_show_the_report_figures(tmp_path: Path, browser_page: Page):
    data = _data(tmp_path)
    report, inv = data.report, data.inventory
    assert inv is not None
    server = await _serve(data)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    page = browser_page
    try:
        response = await page.goto(f"{base}/dashboard")
        assert response is not None and response.status == 200
        assert await page.title() == "Bastion · Overview"
        k = report["kpis"]
        shown = {await c.get_attribute("data-kpi"): (await c.locator("b").inner_text())
                 for c in await page.locator("[data-kpi]").all()}
        assert shown["baseline_coverage"] == f"{k['baseline_coverage']:.1f}%" == "60.0%"
        for name in ("routes", "active_exceptions", "exceptions_expiring_14d", "expired_exceptions",
                     "denied_requests"):
            assert shown[name] == str(k[name]), name
        coverage = await _cells(page, "coverage")
        assert [(r[0], r[3], r[4], r[5]) for r in coverage] == [
            (a["name"], str(a["routes"]), str(a["meeting_baseline"]), f"{a['coverage']:.1f}%")
            for a in report["apis"]]
        expiring = await _cells(page, "expiring")
        active = sorted((e for e in report["exceptions"] if e["state"] == "active"), key=lambda e: e["expires"])
        assert [(r[0], r[4]) for r in expiring] == [(e["id"], str(e["days_to_expiry"])) for e in active]
        await page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

        await page.click("nav >> text=Exceptions")
        assert page.url == f"{base}/dashboard/exceptions"
        rows = await _cells(page, "exceptions")
        assert [(r[0], r[7], r[8]) for r in rows] == [
            (e["id"], str(e["days_to_expiry"]), e["state"]) for e in report["exceptions"]]

        await page.goto(f"{base}/dashboard/denials")
        by_control = {r[0]: int(r[1]) for r in await _cells(page, "denials")}
        assert by_control == report["denials"]["by_control"] == {"gateway": 4, "identity": 1}
        assert len(await _cells(page, "recent")) == 5

        await page.goto(f"{base}/dashboard/routes")
        routes = await _cells(page, "routes")
        assert [r[0] for r in routes] == [r["route"] for r in report["routes"]]
        assert sum(r[4] == "yes" for r in routes) == k["routes_meeting_baseline"]

        await page.goto(f"{base}/dashboard/blocks")
        assert (await _cells(page, "blocks"))[0][:2] == ["ip:203.0.113.9", "credential stuffing"]

        await page.goto(f"{base}/dashboard/shadow")
        shadow = await _cells(page, "shadow")
        assert [(r[0], int(r[1])) for r in shadow] == [(s["request"], s["count"]) for s in inv["shadow"]]
        assert [r[0] for r in await _cells(page, "idle")] == inv["idle_routes"]
        await page.screenshot(path=str(ARTIFACTS / "dashboard-shadow.png"), full_page=True)

        assert (await page.goto(f"{base}/dashboard/nope")).status == 404  # type: ignore[union-attr]
    finally:
        server.close()
    assert (ARTIFACTS / "dashboard-overview.png").stat().st_size > 10_000


def test_pages_escape_config_text(tmp_path: Path):
    data = _data(tmp_path)
    data.report["exceptions"][0]["reason"] = "<script>alert(1)</script>"
    page = dashboard.render("/dashboard/exceptions", data)
    assert page is not None and b"<script>" not in page and b"&lt;script&gt;" in page


async def test_matrix_timeline_and_denials_over_time(tmp_path: Path, browser_page: Page) -> None:
    """The pictures carry the report's facts: each matrix cell's state and policy id, each exception's days
    left, each hour's denials; the waived identity of catalog/status is relaxed there, never "enforced"."""
    data = _data(tmp_path)
    report = data.report
    server = await _serve(data)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    page = browser_page
    try:
        await page.goto(f"{base}/dashboard")
        await page.click("nav >> text=Matrix")
        cells = {}
        for row in await page.locator('table[data-test="matrix"] tbody tr').all():
            route = await row.get_attribute("data-route")
            for i, td in enumerate(await row.locator("td").all()):
                cells[(route, i)] = (await td.get_attribute("data-state"), await td.get_attribute("data-policy"),
                                     (await td.inner_text()).strip())
        assert len(cells) == len(report["routes"]) * 10  # 8 controls, revocation and flows
        assert cells[("catalog/status", 1)][0] == "relaxed" and cells[("catalog/status", 1)][2] == "EXC-DEMO-1"
        assert cells[("catalog/status", 1)][1] == "exception:EXC-DEMO-1/catalog/status/identity.required"
        assert cells[("orders/list-orders", 1)][0] == "enforced"
        assert cells[("orders/get-order", 5)][:1] == ("relaxed",)  # its body limit, by EXC-SOON
        assert cells[("catalog/status", 2)][0] == "missing"  # no scopes, and its class did not ask for them
        assert all(s in ("enforced", "relaxed", "not required", "missing") for s, _, _ in cells.values())
        await page.screenshot(path=str(ARTIFACTS / "dashboard-matrix.png"), full_page=True)

        await page.click('tr[data-route="catalog/status"] td >> nth=1 >> a')
        assert page.url.endswith("/dashboard/exceptions#EXC-DEMO-1")
        days = {await d.get_attribute("data-exception"): await d.get_attribute("data-days")
                for d in await page.locator('[data-test="timeline"] [data-exception]').all()}
        assert days == {e["id"]: str(e["days_to_expiry"]) for e in report["exceptions"]}
        await page.screenshot(path=str(ARTIFACTS / "dashboard-timeline.png"), full_page=True)

        await page.goto(f"{base}/dashboard/denials")
        hours = await _cells(page, "denials-over-time")
        assert sum(int(r[1]) for r in hours) == report["denials"]["denied"] == 5
        assert [r[0] for r in hours] == sorted(report["denials"]["by_hour"])

        await page.goto(f"{base}/dashboard/matrix")
        await page.click('tr[data-route="orders/get-order"] th a')
        assert await page.title() == "Bastion · Route orders/get-order"
        assert [r[0] for r in await _cells(page, "routes")] == ["orders/get-order"]
        assert len(await _cells(page, "route-denials")) == 1  # the expired token on /orders/3
        assert (await page.goto(f"{base}/dashboard/route?id=nope/none")).status == 404  # type: ignore[union-attr]
    finally:
        server.close()


# The instant the baseline pictures were rendered at: any instant gives the same pictures, because the
# config's exceptions, the report and the audit events are all placed relative to it.
PICTURE_INSTANT = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
PICTURES = (("matrix", "/dashboard/matrix", 'table[data-test="matrix"]'),
            ("timeline", "/dashboard/exceptions", '[data-test="timeline"]'),
            ("denials-over-time", "/dashboard/denials", 'table[data-test="denials-over-time"]'))


async def test_pictures_match_their_baselines(tmp_path: Path, browser_page: Page) -> None:
    """Matrix, timeline and denials-over-time, in their geometry view (tests/posture/visual.py says why), equal
    the baseline PNGs in tests/posture/baselines/ within the stated tolerance, and do so under any font."""
    data = _data(tmp_path / "config", PICTURE_INSTANT)
    server = await _serve(data)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    page = browser_page
    failures = []
    try:
        for name, path, selector in PICTURES:
            await page.goto(f"{base}{path}")
            await page.evaluate(ISOLATE_JS, selector)
            await page.add_style_tag(content=GEOMETRY_CSS)
            shot = await page.locator(selector).screenshot()
            result = compare(name, shot, tmp_path / "visual")
            if not result.matches:
                failures.append(f"{name}: {result.detail}")
            # the same picture under other fonts: the comparison does not depend on the machine's fonts
            for family in ("DejaVu Serif", "Liberation Mono"):
                await page.add_style_tag(content=f"*{{font-family:'{family}'!important}}")
                assert await page.locator(selector).screenshot() == shot, (name, family)
    finally:
        server.close()
    assert not failures, "\n".join(failures)


async def test_matrix_cells_show_their_state_colour(tmp_path: Path, browser_page: Page) -> None:
    """On the page as people see it (real fonts, no geometry view), the pixel just inside each matrix cell's
    corner has the colour of the state the DOM names: the picture and the facts agree."""
    data = _data(tmp_path, PICTURE_INSTANT)
    server = await _serve(data)
    page = browser_page
    try:
        await page.goto(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/dashboard/matrix")
        shot = await page.screenshot(full_page=True)
        seen = set()
        for td in await page.locator('table[data-test="matrix"] tbody td').all():
            box = await td.bounding_box()
            assert box is not None
            state = await td.get_attribute("data-state")
            assert state is not None
            seen.add(state)
            # 2 px inside the top-left corner: within the cell's 5 px padding, where no text is drawn
            assert colour_at(shot, box["x"] + 2, box["y"] + 2) == hex_rgb(matrix.COLOURS[state]), state
    finally:
        server.close()
    assert seen == {"enforced", "relaxed", "not required", "missing"}


def test_comparison_tolerates_a_shifted_edge_but_not_a_changed_cell(tmp_path: Path) -> None:
    """The tolerance, tried on the matrix baseline itself: one cell in another state's colour fails and leaves
    actual, expected and diff images behind; every pixel moved one right and one down (a rounding change) passes."""
    baseline = Image.open(BASELINES / "matrix.png").convert("RGB")

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()

    recoloured = baseline.copy()
    w, h = baseline.size
    recoloured.paste(hex_rgb(matrix.COLOURS["missing"]), (w * 2 // 9 + 4, h // 2, w * 3 // 9 - 4, h // 2 + 20))
    result = compare("matrix", png(recoloured), tmp_path)
    assert not result.matches and str(tmp_path) in result.detail
    assert {p.name for p in tmp_path.iterdir()} == {"matrix.actual.png", "matrix.expected.png", "matrix.diff.png"}
    shifted = Image.new("RGB", baseline.size, baseline.getpixel((0, 0)))
    shifted.paste(baseline.crop((0, 0, w - 1, h - 1)), (1, 1))
    assert compare("matrix", png(shifted), tmp_path / "shifted").matches


def _crl(ca: trustme.CA, path: Path, next_update: datetime, revoked: int = 0) -> None:
    """A CRL signed by `ca` (as a partner CA publishes it), with `revoked` entries."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
               .last_update(next_update - timedelta(days=7)).next_update(next_update))
    for serial in range(1, revoked + 1):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(next_update - timedelta(days=8))
            .build())
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))  # type: ignore[arg-type]


def _transport_data(tmp_path: Path) -> DashboardData:
    """The demo behind an mTLS listener: orders (partner) checks revocation hard from two CRLs, one fresh and
    one stale; catalog (public) requires client certificates without checking revocation."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "gw.pem")
    server.private_key_pem.write_to_path(tmp_path / "gw.key")
    _crl(ca, tmp_path / "fresh.crl", PICTURE_INSTANT + timedelta(days=1), revoked=2)
    _crl(ca, tmp_path / "stale.crl", PICTURE_INSTANT - timedelta(hours=2))

    def mutate(doc: dict[str, Any]) -> None:
        doc["gateway"]["listeners"].append(
            {"address": "127.0.0.1", "port": 0, "tls": {"cert": str(tmp_path / "gw.pem"), "key": str(
                tmp_path / "gw.key"), "client_ca": str(tmp_path / "ca.pem"), "min_version": "1.3"}})
        doc["gateway"]["revocation"] = {"issuers": [str(tmp_path / "ca.pem")], "ocsp": False,
                                        "crls": [str(tmp_path / "fresh.crl"), str(tmp_path / "stale.crl")]}
        doc["classes"]["partner"]["transport"] = {"tls": "required", "mtls": "required", "revocation": "hard"}
        doc["classes"]["public"]["transport"] = {"mtls": "required"}

    config, _ = demo_config(tmp_path, "https://idp.example.com", "http://127.0.0.1:9", mutate, now=PICTURE_INSTANT)
    at = PICTURE_INSTANT.timestamp()
    compiled = compile_config(load_config(config), build_stages=False, now=at)
    return DashboardData(report=build(compiled, at, events=[]))


async def test_tls_revocation_and_flows_per_route(tmp_path: Path, browser_page: Page) -> None:
    """Listener TLS versions and client certificates, each route's TLS/mTLS/revocation, each CRL's state at the
    report's instant, and every flow step: as tables, and as the matrix's revocation and flows columns."""
    data = _transport_data(tmp_path)
    server = await _serve(data)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    page = browser_page
    try:
        await page.goto(f"{base}/dashboard")
        await page.click("nav >> text=TLS & flows")
        assert await page.title() == "Bastion · TLS, revocation and flows"
        listeners = await _cells(page, "listeners")
        assert [(r[1], r[2], r[3]) for r in listeners] == [("plaintext", "-", "-"),
                                                          ("TLS", "TLS 1.3", "optional")]
        assert listeners[1][4] == str(tmp_path / "ca.pem")
        routes = {r[0]: r for r in await _cells(page, "route-tls")}
        assert routes["orders/get-order"][1:6] == ["required", "1.2", "required", "hard", "crl"]
        assert routes["catalog/status"][3:6] == ["required", "off", "-"]
        assert routes["orders/create-order"][7] == "purchase/order"
        crls = {Path(r[0]).name: r for r in await _cells(page, "crls")}
        assert (crls["fresh.crl"][2], crls["fresh.crl"][3], crls["fresh.crl"][4]) == (
            "2030-03-02T12:00:00Z", "2", "fresh")
        assert crls["stale.crl"][4] == "stale"  # two hours past next_update, grace one hour: answers nothing
        assert "O=trustme" in crls["fresh.crl"][1]  # its issuer, whose signature was verified
        assert (await page.locator('[data-test="ocsp"]').inner_text()).startswith("OCSP off; 1 issuer")
        flows = await _cells(page, "flows")
        assert [(r[0], r[1], r[2], r[3]) for r in flows] == [
            ("purchase", "browse", "catalog/list-products", "-"), ("purchase", "order", "orders/create-order",
                                                                  "browse")]
        assert flows[1][5] == "20 per 86400s"

        await page.click("nav >> text=Matrix")
        head = [h.strip() for h in await page.locator('table[data-test="matrix"] thead th').all_inner_texts()]
        assert head[-2:] == ["revocation", "flows"]
        revocation, flow = len(head) - 3, len(head) - 2  # their cell indexes (the first th is the route)
        cells = {}
        for row in await page.locator('table[data-test="matrix"] tbody tr').all():
            tds = await row.locator("td").all()
            cells[await row.get_attribute("data-route")] = [
                (await td.get_attribute("data-state"), await td.get_attribute("data-policy"),
                 await td.get_attribute("title")) for td in tds]
        assert cells["orders/get-order"][revocation][:2] == (
            "enforced", "class:partner/orders/get-order/transport.revocation")
        assert cells["orders/get-order"][revocation][2].endswith("hard (crl)")
        assert cells["catalog/status"][revocation][0] == "missing"  # client certificates, never checked
        assert cells["orders/create-order"][flow][:2] == ("enforced", "flow:purchase/orders/create-order/flows.order")
        assert cells["orders/get-order"][flow][0] == "not required"
    finally:
        server.close()
