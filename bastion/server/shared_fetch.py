"""Key-set fetches shared by the workers of one machine: N workers that refresh a JWKS (or a discovery or SSF
configuration document) at the same moment, as they do on a key rotation or an unknown `kid`, cause one fetch.

```
worker JwksCache ── SharedFetcher(GET url) ──► link ──► FetchPool (supervisor): one fetch in flight per URL,
                                                        its answer reused for `reuse` seconds
```
Only plain GETs go through the supervisor: a request with a body or headers (token introspection, an SSF
poll with credentials) is sent by the worker itself, so no credential ever crosses the link.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from bastion.http.fetch import FetchError, HttpResponse, fetch

MAX_ENTRIES = 64  # distinct URLs remembered (providers x documents): bounded


class SharedFetcher:
    """A worker's fetcher (`Services.identity_fetcher`): plain GETs are asked of the supervisor."""

    def __init__(self, link: Any, local: Callable[..., Any] = fetch) -> None:
        self.link = link
        self.local = local

    async def __call__(self, url: str, *, method: str = "GET", headers: tuple[tuple[str, str], ...] = (),
                       body: bytes | None = None, timeout: float = 5.0, max_bytes: int = 1024 * 1024,
                       ssl_context: Any = None) -> HttpResponse:
        if method != "GET" or headers or body is not None or ssl_context is not None:
            response: HttpResponse = await self.local(url, method=method, headers=headers, body=body,
                                                      timeout=timeout, max_bytes=max_bytes, ssl_context=ssl_context)
            return response
        try:
            doc = await self.link.call("fetch", url, timeout, max_bytes, timeout=timeout + 1.0)
        except Exception as exc:  # the supervisor is gone or its fetch failed: a failed fetch, as locally
            raise FetchError(str(exc)) from exc
        return HttpResponse(int(doc["status"]), dict(doc["headers"]), base64.b64decode(doc["body"]))


class FetchPool:
    """The supervisor's side: one fetch per URL at a time, and its answer reused for `reuse` seconds."""

    def __init__(self, reuse: float = 1.0, fetcher: Callable[..., Any] = fetch,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.reuse = reuse
        self.fetcher = fetcher
        self.monotonic = monotonic
        self.fetches = 0
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._recent: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def get(self, url: str, timeout: float, max_bytes: int) -> dict[str, Any]:
        now = self.monotonic()
        recent = self._recent.get(url)
        if recent is not None and recent[0] > now:
            return recent[1]
        pending = self._inflight.get(url)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[url] = pending
            try:
                self.fetches += 1
                response = await self.fetcher(url, timeout=float(timeout), max_bytes=int(max_bytes))
                doc = {"status": response.status, "headers": response.headers,
                       "body": base64.b64encode(response.body).decode()}
                self._recent[url] = (self.monotonic() + self.reuse, doc)
                self._recent.move_to_end(url)
                while len(self._recent) > MAX_ENTRIES:
                    self._recent.popitem(last=False)
                pending.set_result(doc)
            except Exception as exc:
                pending.set_exception(exc)
                with contextlib.suppress(Exception):
                    pending.exception()  # retrieved: a failure with no other waiter is not "never retrieved"
            finally:
                del self._inflight[url]
        return await asyncio.shield(pending)
