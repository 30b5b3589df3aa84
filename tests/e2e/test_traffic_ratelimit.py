"""Rate limits over real sockets: 429 with Retry-After and the RateLimit fields, counting per forwarded client
behind a trusted proxy, and consumer tiers picked from the API key's consumer (memory and Redis state)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.stages.base import Services
from bastion.stages.identity import new_api_key
from tests.helpers import request, running_gateway

GOLD_KEY, GOLD_LINE = new_api_key("acme")
FREE_KEY, FREE_LINE = new_api_key("tiny")
START = 1_800_000_000 - 1_800_000_000 % 60 + 15  # 15 s into a minute window: `t` is 45 on every item

CONFIG = f"""
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0}}]
  admin: {{address: 127.0.0.1, port: 0}}
  trusted_proxies: [127.0.0.1/32]
  state: STATE
  audit: {{sinks: [{{type: file, path: audit.jsonl}}]}}
consumers:
  - name: acme
    tier: gold
    credentials: [{GOLD_LINE.split("  #")[0][2:]}]
  - name: tiny
    tier: free
    credentials: [{FREE_LINE.split("  #")[0][2:]}]
classes:
  open:
    identity: {{required: false}}
    traffic:
      rate_limits: [{{name: per-client, limit: 2, window: 1m, key: client_ip}}]
  partner:
    identity: {{required: true, methods: [api_key]}}
    traffic:
      rate_limits:
        - {{name: per-consumer, limit: 3, window: 1m, key: consumer}}
        - {{name: free-tier, limit: 1, window: 1m, key: consumer, tiers: [free]}}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: {{upstream}}
    base_path: /shop
    routes:
      - {{name: items, path: /items, methods: [GET]}}
  - name: partners
    owner: team-partners@example.com
    class: partner
    upstream: {{upstream}}
    base_path: /partners
    routes:
      - {{name: orders, path: /orders, methods: [GET]}}
"""


@pytest.fixture(params=["memory", "redis"])
def state_url(request: pytest.FixtureRequest) -> str:
    return "memory" if request.param == "memory" else request.getfixturevalue("redis_server").url


def services() -> Services:
    return Services(wall_clock=lambda: float(START))


def audit_details(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """request id -> (reason, operator detail) from the audit log, once the gateway stopped."""
    out = {}
    for line in (tmp_path / "audit.jsonl").read_text().splitlines():
        bastion = json.loads(line).get("unmapped", {}).get("bastion", {})
        if "request_id" in bastion:
            out[bastion["request_id"]] = (bastion["reason"] or "", bastion.get("detail") or "")
    return out


async def test_429_with_retry_after_and_ratelimit_fields(tmp_path: Path, state_url: str) -> None:
    async with running_gateway(tmp_path, CONFIG.replace("STATE", state_url), services()) as gw:
        port = gw.bound[0][1]
        client = {"X-Forwarded-For": "203.0.113.5"}
        first = await request(port, "GET", "/shop/items", client)
        second = await request(port, "GET", "/shop/items", client)
        status, headers, body = await request(port, "GET", "/shop/items", client)
        other = await request(port, "GET", "/shop/items", {"X-Forwarded-For": "203.0.113.6"})
    assert (first[0], second[0], status, other[0]) == (200, 200, 429, 200)
    assert first[1]["ratelimit-policy"] == '"per-client";q=2;w=60'
    assert first[1]["ratelimit"] == '"per-client";r=1;t=45'
    assert second[1]["ratelimit"] == '"per-client";r=0;t=45'
    # 45 s to the end of this window, then 30 s until the 2 requests weigh 1 or less (no double quota at the edge)
    assert headers["retry-after"] == "75"
    assert headers["ratelimit-policy"] == '"per-client";q=2;w=60'
    assert headers["ratelimit"] == '"per-client";r=0;t=75'
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["detail"] == "Too many requests; retry after 75 seconds."
    assert other[1]["ratelimit"] == '"per-client";r=1;t=45'  # another forwarded client: its own counter
    reason, detail = audit_details(tmp_path)[headers["x-request-id"]]
    assert reason == "rate_limited"
    assert detail.startswith("per-client (sliding_window 2 per 60s, key client_ip) exhausted for ip=203.0.113.5")


async def test_the_consumers_tier_adds_its_limits(tmp_path: Path, state_url: str) -> None:
    async with running_gateway(tmp_path, CONFIG.replace("STATE", state_url), services()) as gw:
        port = gw.bound[0][1]
        free = [await request(port, "GET", "/partners/orders", {"X-API-Key": FREE_KEY}) for _ in range(2)]
        gold = [await request(port, "GET", "/partners/orders", {"X-API-Key": GOLD_KEY}) for _ in range(4)]
    assert [r[0] for r in free] == [200, 429]
    assert [r[0] for r in gold] == [200, 200, 200, 429]
    assert free[0][1]["ratelimit-policy"] == '"per-consumer";q=3;w=60, "free-tier";q=1;w=60'
    assert free[0][1]["ratelimit"] == '"per-consumer";r=2;t=45, "free-tier";r=0;t=45'
    assert gold[0][1]["ratelimit-policy"] == '"per-consumer";q=3;w=60'
    assert free[1][1]["retry-after"] == "105"  # a limit of 1: the whole next window must pass too
    details = audit_details(tmp_path)
    assert details[free[1][1]["x-request-id"]][1].startswith(
        "free-tier (sliding_window 1 per 60s, key consumer, tiers free) exhausted for c=tiny")
    assert details[gold[3][1]["x-request-id"]][1].startswith("per-consumer (")
