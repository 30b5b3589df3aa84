"""The report per route: TLS policy in force, client-certificate revocation, flows; API6 only where a flow applies."""

from __future__ import annotations

import textwrap

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture import render
from bastion.posture.report import build

CONFIG = """
version: 1
gateway:
  listeners:
    - {port: 0, tls: {cert: gw.pem, key: gw.key, client_ca: ca.pem, min_version: "1.3", session_tickets: false}}
  revocation: {issuers: [partners-ca.pem], crls: [partners.crl], ocsp: true}
classes:
  partner:
    transport: {tls: required, mtls: required, min_tls: "1.3", revocation: hard}
    identity: {required: false}
    traffic: {rate_limits: [{name: per-ip, key: client_ip, limit: 10, window: 1s}]}
  public:
    identity: {required: false}
    traffic: {rate_limits: [{name: per-ip, key: client_ip, limit: 10, window: 1s}]}
apis:
  - {name: shop, owner: a@example.com, class: public, upstream: http://127.0.0.1:9,
     routes: [{name: list, path: /items, methods: [GET]}, {name: buy, path: /buy, methods: [POST]}]}
  - {name: partners, owner: b@example.com, class: partner, upstream: http://127.0.0.1:9,
     routes: [{name: feed, path: /feed, methods: [GET]}]}
flows:
  - name: purchase
    steps:
      - {name: browse, route: shop/list}
      - {name: buy, route: shop/buy, after: browse}
"""


def test_report_shows_tls_revocation_and_flows_per_route(tmp_path):
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent(CONFIG))
    doc = build(compile_config(load_config(tmp_path / "bastion.yaml"), build_stages=False), 0.0)
    routes = {r["route"]: r for r in doc["routes"]}
    feed, buy = routes["partners/feed"], routes["shop/buy"]
    assert feed["transport"]["min_tls"] == "1.3" and feed["transport"]["revocation"] == "hard"
    assert feed["transport"]["revocation_sources"] == ["crl", "ocsp"]
    assert feed["transport"]["tls_listeners"]["min_version"] == "1.3"
    assert routes["shop/list"]["transport"]["revocation_sources"] == []
    assert buy["flows"] == [{"flow": "purchase", "step": "buy"}]
    # API6 is credited where a flow applies, never for a rate limit alone
    assert buy["owasp"]["API6:2023"] == ["flows"] and "API4:2023" in buy["owasp"]
    assert "API6:2023" not in feed["owasp"] and feed["flows"] == []
    text = render.markdown(doc)
    assert "Business flows: purchase (step buy)." in text
    assert "client-certificate revocation hard (crl, ocsp)" in text
    assert "Business flows: none (OWASP API6 not answered)." in text
