"""HTTP batches, the shape of a SIEM's HTTP event collector (Splunk HEC and the like), with a bearer token.

`body: hec` sends `{"event": <event>, "source": "bastion", "sourcetype": "ocsf"}` objects back to back (how a
HEC takes a batch); `body: ndjson` sends the JSON lines as they are. Any answer but 2xx is a failed delivery:
the batch stays in the channel and is sent again, never dropped.

Every POST carries `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): a digest of the batch's events,
so a batch sent again after a timeout (the collector took it, the answer was lost) carries the same key.
Receivers that ignore the header still de-duplicate by `metadata.uid`, which every event has.
"""

from __future__ import annotations

import hashlib
import ssl

from bastion.audit.sinks import SinkError
from bastion.http.fetch import FetchError, fetch


class HttpSink:
    """POSTs one batch per delivery."""

    def __init__(self, name: str, url: str, *, token: str | None = None, scheme: str = "Bearer",
                 body: str = "hec", sourcetype: str = "ocsf", timeout: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.url = url
        self.body = body
        self.timeout = timeout
        self.ssl_context = ssl_context
        headers = [("Content-Type", "application/json" if body == "hec" else "application/x-ndjson")]
        if token:
            headers.append(("Authorization", f"{scheme} {token}"))
        self._headers = tuple(headers)
        self._sourcetype = b'"source":"bastion","sourcetype":"' + sourcetype.encode() + b'"}'

    def encode(self, lines: list[bytes]) -> bytes:
        if self.body == "ndjson":
            return b"".join(lines)
        tail = b"," + self._sourcetype
        return b"".join(b'{"event":' + line.rstrip(b"\n") + tail for line in lines)

    async def deliver(self, lines: list[bytes]) -> None:
        try:
            headers = (*self._headers, ("Idempotency-Key", idempotency_key(lines)))
            response = await fetch(self.url, method="POST", headers=headers, body=self.encode(lines),
                                   timeout=self.timeout, max_bytes=64 * 1024, ssl_context=self.ssl_context)
        except FetchError as exc:
            raise SinkError(f"http {self.url}: {exc}") from exc
        if not 200 <= response.status < 300:
            raise SinkError(f"http {self.url}: status {response.status}")

    async def close(self) -> None:
        return None


def idempotency_key(lines: list[bytes]) -> str:
    """The same batch gives the same key: a digest of its serialised events (each carries its unique id)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
    return digest.hexdigest()[:32]
