"""IP rules over real sockets: the client address behind trusted and untrusted proxies, deny lists, and a
consumer's own networks. The peer is always 127.0.0.1; only `gateway.trusted_proxies` decides whether the
X-Forwarded-For / Forwarded hops it sends are believed (walked from the right)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.stages.identity import new_api_key
from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway

KEY, KEY_LINE = new_api_key("partner")

CONFIG = LOOPBACK_GATEWAY + """
  trusted_proxies: TRUSTED
  audit: {sinks: [{type: file, path: audit.jsonl}]}
consumers:
  - name: partner
    networks: [198.51.100.0/24]
    credentials:
      - CREDENTIAL
classes:
  edge:
    identity: {required: false}
    traffic:
      ip:
        allow: [203.0.113.0/24, 198.51.100.0/24, "2001:db8::/32"]
        deny: [203.0.113.66/32]
  partner:
    identity: {required: true, methods: [api_key]}
apis:
  - name: shop
    owner: team-shop@example.com
    class: edge
    upstream: {upstream}
    base_path: /shop
    routes:
      - {name: items, path: /items, methods: [GET]}
  - name: partners
    owner: team-partners@example.com
    class: partner
    upstream: {upstream}
    base_path: /partners
    routes:
      - {name: orders, path: /orders, methods: [GET]}
"""


def config(trusted: str) -> str:
    return CONFIG.replace("TRUSTED", trusted).replace("- CREDENTIAL", KEY_LINE)


def decisions(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """request id -> (reason, client ip) from the audit log (written once the gateway stopped)."""
    out = {}
    for line in (tmp_path / "audit.jsonl").read_text().splitlines():
        bastion = json.loads(line).get("unmapped", {}).get("bastion", {})
        if "request_id" in bastion:
            out[bastion["request_id"]] = (bastion["reason"] or "", bastion["client_ip"])
    return out


# (forwarding headers, status, reason, the client address the gateway settled on)
BEHIND_TRUSTED_PROXY = [
    ({"X-Forwarded-For": "203.0.113.5"}, 200, "", "203.0.113.5"),
    # two trusted hops (10.x is an internal proxy chain) are skipped from the right
    ({"X-Forwarded-For": "203.0.113.5, 10.1.2.3, 10.9.9.9"}, 200, "", "203.0.113.5"),
    ({"X-Forwarded-For": "203.0.113.66"}, 403, "ip_denied", "203.0.113.66"),
    ({"X-Forwarded-For": "203.0.113.66, 10.1.2.3"}, 403, "ip_denied", "203.0.113.66"),
    # a client-written hop left of the first untrusted one is never believed: no way to launder a denied address
    ({"X-Forwarded-For": "203.0.113.5, 203.0.113.66"}, 403, "ip_denied", "203.0.113.66"),
    ({"X-Forwarded-For": "203.0.113.66, 203.0.113.5"}, 200, "", "203.0.113.5"),
    ({"X-Forwarded-For": "192.0.2.1"}, 403, "ip_not_allowed", "192.0.2.1"),
    ({"Forwarded": 'for="[2001:db8::5]:4711";proto=https'}, 200, "", "2001:db8::5"),
    ({"Forwarded": "for=203.0.113.66"}, 403, "ip_denied", "203.0.113.66"),
    ({}, 403, "ip_not_allowed", "127.0.0.1"),  # no forwarding header: the proxy itself is the client
]


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(tmp_path: Path) -> None:
    seen = []
    async with running_gateway(tmp_path, config("[127.0.0.1/32, 10.0.0.0/8]")) as gw:
        port = gw.bound[0][1]
        for headers, status, reason, client in BEHIND_TRUSTED_PROXY:
            got, response, _ = await request(port, "GET", "/shop/items", headers)
            assert got == status, headers
            seen.append((response["x-request-id"], reason, client))
    logged = decisions(tmp_path)
    assert [logged[rid] for rid, _, _ in seen] == [(reason, client) for _, reason, client in seen]


@pytest.mark.parametrize("forwarded", [
    {"X-Forwarded-For": "203.0.113.5"},  # an allowed address, claimed: ignored
    {"X-Forwarded-For": "203.0.113.5, 10.1.2.3"},
    {"Forwarded": "for=203.0.113.5"},
])
async def test_an_untrusted_peer_cannot_claim_an_allowed_address(tmp_path: Path,
                                                                 forwarded: dict[str, str]) -> None:
    async with running_gateway(tmp_path, config("[10.0.0.0/8]")) as gw:
        status, response, _ = await request(gw.bound[0][1], "GET", "/shop/items", forwarded)
        assert status == 403
    assert decisions(tmp_path)[response["x-request-id"]] == ("ip_not_allowed", "127.0.0.1")


async def test_an_untrusted_peer_is_judged_by_its_own_address(tmp_path: Path) -> None:
    # the peer 127.0.0.1 is allowed here, and a denied address it writes in X-Forwarded-For changes nothing
    text = config("[]").replace("allow: [203.0.113.0/24,", "allow: [127.0.0.0/8, 203.0.113.0/24,")
    async with running_gateway(tmp_path, text) as gw:
        status, response, body = await request(gw.bound[0][1], "GET", "/shop/items",
                                               {"X-Forwarded-For": "203.0.113.66"})
        assert status == 200
        assert json.loads(body)["headers"]["x-forwarded-for"] == "127.0.0.1"  # the claim is not passed on
    assert decisions(tmp_path)[response["x-request-id"]] == ("", "127.0.0.1")


@pytest.mark.parametrize(("trusted", "forwarded_for", "status", "reason"), [
    ("[127.0.0.1/32]", "198.51.100.20", 200, ""),  # from its network, through the trusted proxy
    ("[127.0.0.1/32]", "203.0.113.5", 403, "consumer_network_denied"),  # the right key, the wrong network
    ("[]", "198.51.100.20", 403, "consumer_network_denied"),  # its network claimed by an untrusted peer
])
async def test_a_consumer_may_only_call_from_its_networks(tmp_path: Path, trusted: str, forwarded_for: str,
                                                          status: int, reason: str) -> None:
    async with running_gateway(tmp_path, config(trusted)) as gw:
        got, response, _ = await request(gw.bound[0][1], "GET", "/partners/orders",
                                         {"X-API-Key": KEY, "X-Forwarded-For": forwarded_for})
        assert got == status
    assert decisions(tmp_path)[response["x-request-id"]][0] == reason
