"""A realistic OpenAPI document (13 operations, nested schemas, cross-file $refs) enforced by the running gateway."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway

pytestmark = pytest.mark.asyncio

SPECS = Path(__file__).parent.parent / "data" / "openapi"

CONFIG = LOOPBACK_GATEWAY + """
classes:
  checked:
    identity: {required: false, methods: []}
    input: {contract: enforce, undeclared: UNDECLARED, inspection: block}
apis:
  - name: shop
    owner: team-shop@example.com
    class: checked
    upstream: {upstream}
    base_path: /shop
    openapi: shop.yaml
"""

JSON = {"Content-Type": "application/json"}
PRODUCT = {"name": "lamp", "price": {"amount": 12.5, "currency": "EUR"}, "tags": ["home"],
           "dimensions": {"width": 10, "height": 30}}


@pytest.fixture
def specs(tmp_path):
    for name in ("shop.yaml", "common.yaml"):
        shutil.copy(SPECS / name, tmp_path / name)
    # this test is about the input contract: anonymous callers, so no bearer requirement on the operations
    spec = tmp_path / "shop.yaml"
    spec.write_text(spec.read_text().replace("security:\n  - bearer: []\n", "", 1))
    return tmp_path


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


CASES = [
    # (method, path, headers, body, status, what the problem detail must name)
    ("GET", "/shop/products?limit=10&sort=price&tag=a&tag=b&ids=1,2", {}, b"", 200, None),
    ("GET", "/shop/products?limit=1000", {}, b"", 400, "limit"),
    ("GET", "/shop/products?sort=cost", {}, b"", 400, "sort"),
    ("GET", "/shop/products?bogus=1", {}, b"", 400, "bogus"),
    ("GET", "/shop/products?q=1%27%20OR%20%271%27%3D%271", {}, b"", 400, None),  # SQL injection
    ("GET", "/shop/products?q=O%27Brien%20lamp", {}, b"", 200, None),  # benign look-alike
    ("POST", "/shop/products", JSON, body(PRODUCT), 200, None),
    ("POST", "/shop/products", JSON, body({**PRODUCT, "price": {"amount": -1, "currency": "EUR"}}), 400, "/price/amount"),
    ("POST", "/shop/products", JSON, body({"price": {"amount": 1, "currency": "EUR"}}), 400, "name"),
    ("POST", "/shop/products", {"Content-Type": "text/plain"}, b"lamp", 415, None),
    ("POST", "/shop/products", JSON, b'{"name": "a", "name": "b", "price": {"amount": 1, "currency": "EUR"}}', 400, None),
    ("POST", "/shop/products", JSON, b'{"name": "\xff", "price": {"amount": 1, "currency": "EUR"}}', 400, None),
    ("GET", "/shop/products/0", {}, b"", 400, "productId"),
    ("DELETE", "/shop/products/5", {}, b"", 400, "x-reason"),
    ("DELETE", "/shop/products/5", {"X-Reason": "duplicate"}, b"", 200, None),
    ("POST", "/shop/orders", JSON, body({"items": [{"productId": 1, "quantity": 0}]}), 400, "/items/0/quantity"),
    ("POST", "/shop/orders", JSON, body({"items": [{"productId": 1, "quantity": 2}],
                                         "shipping": {"street": "1 Main St", "city": "Oslo", "country": "NO"}}), 200, None),
    ("POST", "/shop/orders", {"Content-Type": "application/x-www-form-urlencoded"}, b"productId=3&quantity=11", 400, "quantity"),
    ("GET", "/shop/orders/not-a-uuid", {}, b"", 400, "orderId"),
    ("GET", "/shop/orders/3f2c1a4e-8b1d-4c2a-9f3e-1a2b3c4d5e6f/items/2", {}, b"", 200, None),
    ("POST", "/shop/payments", JSON, body({"method": "card", "card": "4111111111111111"}), 200, None),
    ("POST", "/shop/payments", JSON, body({"method": "card", "iban": "x"}), 400, None),
    ("POST", "/shop/categories", JSON, body({"name": "a", "children": [{"name": "b", "children": [{"name": 3}]}]}), 400, "name"),
]


@pytest.mark.parametrize(("method", "path", "headers", "payload", "status", "names"), CASES,
                         ids=[f"{c[0]} {c[1][:40]} -> {c[4]}" for c in CASES])
async def test_contract_through_the_gateway(specs, method, path, headers, payload, status, names):
    config = CONFIG.replace("UNDECLARED", "reject")
    async with running_gateway(specs, config) as gw:
        got, resp_headers, resp = await request(gw.bound[0][1], method, path, headers, payload)
        assert got == status, resp
        if status >= 400:
            doc = json.loads(resp)
            assert resp_headers["content-type"] == "application/problem+json"
            if names:
                assert names in doc["detail"]
            assert "schema" not in doc["detail"].lower() or "$ref" not in doc["detail"]


async def test_mass_assignment_is_stripped_before_the_upstream(specs):
    async with running_gateway(specs, CONFIG.replace("UNDECLARED", "strip")) as gw:
        status, _, resp = await request(gw.bound[0][1], "POST", "/shop/products", JSON,
                                        body({**PRODUCT, "role": "admin", "id": 7}))
        assert status == 200
        seen = json.loads(resp)
        assert seen["body_bytes"] == len(body(PRODUCT).replace(b" ", b"")) or seen["body_bytes"] < len(
            body({**PRODUCT, "role": "admin", "id": 7}))
    async with running_gateway(specs, CONFIG.replace("UNDECLARED", "reject")) as gw:
        status, _, resp = await request(gw.bound[0][1], "POST", "/shop/products", JSON,
                                        body({**PRODUCT, "role": "admin"}))
        assert status == 400 and "role" in json.loads(resp)["detail"]
