"""Two gateway processes, one real Redis: a limit of L requests admits L in total, whatever the split."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.workers import config as shop_config
from tests.helpers import gateway_nodes, http_get
from tests.state.redis_server import RedisServer

LIMIT = 37


def get(url: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = http_get(url)
    return status, headers


def test_two_gateways_share_one_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    def config(port: int, admin: int, upstream: int) -> str:
        return shop_config(port, admin, upstream, state=redis_server.url,
                           rate_limit=f"{{name: per-route, limit: {LIMIT}, window: 1h, key: route}}")

    with gateway_nodes(tmp_path, 2, config) as nodes:
        ports = [port for port, _ in nodes]
        # an uneven split: 3 of every 4 requests to gateway a, concurrently
        urls = [f"http://127.0.0.1:{ports[0 if i % 4 else 1]}/items" for i in range(100)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(get, urls))
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) == LIMIT  # the promise is L +/- 1; atomic scripts make it exact
        allowed = next(h for s, h in results if s == 200)
        assert allowed["ratelimit-policy"] == f'"per-route";q={LIMIT};w=3600'
        refused = next(h for s, h in results if s == 429)
        assert int(refused["retry-after"]) >= 1 and refused["ratelimit"].startswith('"per-route";r=0;')
