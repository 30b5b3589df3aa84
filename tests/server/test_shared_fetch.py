"""Key sets fetched once for all workers: concurrent refreshes in several workers cause one fetch; requests with
a body or headers never go through the supervisor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from bastion.http.fetch import FetchError
from bastion.server.link import Link, connect
from bastion.server.shared_fetch import FetchPool, SharedFetcher
from bastion.stages.identity.config import JwksCacheConfig
from bastion.stages.identity.jwks import JwksCache
from tests.stages.identity.conftest import JwksServer


async def _workers(tmp_path: Path, pool: FetchPool, count: int) -> tuple[list[Link], asyncio.Server]:
    async def handle(op: str, args: list[Any]) -> Any:
        return await pool.get(str(args[0]), float(args[1]), int(args[2]))

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        Link(reader, writer, handle).start()

    server = await asyncio.start_unix_server(accept, str(tmp_path / "s.sock"))
    return [await connect(str(tmp_path / "s.sock")) for _ in range(count)], server


async def test_four_workers_refreshing_at_once_fetch_the_key_set_once(tmp_path: Path) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"})
    jwks = await JwksServer({"keys": [key.as_dict(private=False)]}).start()
    pool = FetchPool(reuse=1.0)
    links, server = await _workers(tmp_path, pool, 4)
    try:
        caches = [JwksCache("idp", JwksCacheConfig(), jwks_uri=f"{jwks.url}/jwks.json", fetcher=SharedFetcher(link))
                  for link in links]
        await asyncio.gather(*(cache.refresh() for cache in caches))  # a rotation seen by every worker
        assert jwks.hits == {"/jwks.json": 1} and pool.fetches == 1
        assert all(cache.snapshot()["ready"] for cache in caches)
        jwks.status = 503
        await asyncio.sleep(1.1)  # past the reuse time: the next refresh fetches again, once, and fails for all
        results = await asyncio.gather(*(cache.refresh() for cache in caches), return_exceptions=True)
        assert jwks.hits == {"/jwks.json": 2}
        assert all(isinstance(r, FetchError) for r in results)
    finally:
        for link in links:
            await link.close()
        server.close()
        await jwks.close()


async def test_requests_with_credentials_stay_in_the_worker(tmp_path: Path) -> None:
    sent: list[str] = []

    async def local(url: str, **kwargs: Any) -> Any:
        sent.append(kwargs["method"])
        raise FetchError("not reachable")

    class NoLink:
        async def call(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a request with credentials went to the supervisor")

    fetcher = SharedFetcher(NoLink(), local=local)
    with pytest.raises(FetchError):
        await fetcher("http://127.0.0.1:1/introspect", method="POST", body=b"token=x",
                      headers=(("Authorization", "Basic eA=="),))
    assert sent == ["POST"]
