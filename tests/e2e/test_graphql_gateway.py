"""GraphQL limits through the running gateway (the query never reaches the upstream when refused)."""

from __future__ import annotations

import json

from tests.helpers import LOOPBACK_GATEWAY, request, running_gateway

CONFIG = LOOPBACK_GATEWAY + """
classes:
  public:
    identity: {required: false, methods: []}
    graphql: {max_depth: 4, max_cost: 200, max_aliases: 2, introspection: false}
apis:
  - name: shop
    owner: team-shop@example.com
    class: public
    upstream: {upstream}
    routes: [{name: graphql, path: /graphql, methods: [GET, POST]}]
"""

JSON = {"Content-Type": "application/json"}


def query(text: str) -> bytes:
    return json.dumps({"query": text}).encode()


async def test_graphql_limits_hold_at_the_gateway(tmp_path):
    async with running_gateway(tmp_path, CONFIG) as gw:
        port = gw.bound[0][1]
        status, _, body = await request(port, "POST", "/graphql", JSON, query("{ me { id name } }"))
        assert status == 200 and json.loads(body)["service"] == "demo-upstream"
        cases = {
            "{ a { b { c { d { e } } } } }": "graphql",  # depth 5 > 4
            "{ products(first: 100) { reviews(first: 100) { id } } }": "graphql",  # cost
            "{ a: me { id } b: me { id } c: me { id } }": "graphql",  # aliases
            "{ __schema { types { name } } }": "graphql",  # introspection
            "{ me { id ": "graphql",  # syntax
        }
        for text in cases:
            status, headers, body = await request(port, "POST", "/graphql", JSON, query(text))
            assert status == 400, (text, body)
            assert headers["content-type"] == "application/problem+json"
            assert text not in body.decode()  # the public detail never echoes the query
        status, headers, _ = await request(port, "GET", "/graphql?query=mutation%20%7B%20drop%20%7D")
        assert status == 405 and headers["allow"] == "POST"
