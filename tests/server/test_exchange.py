"""ExchangeBase, what both protocols' exchanges share: the RFC 9457 answer and the whole-body read."""

from __future__ import annotations

import json

from bastion.server.body import NO_BODY, RequestBody
from bastion.server.exchange import ExchangeBase


class Carrier:
    peer, tls, peer_cert = "192.0.2.9", True, b"der"

    def body_read(self) -> None:
        pass

    def body_failed(self) -> None:
        pass


class Exchange(ExchangeBase):
    """The primitives an exchange must give; the rest is inherited."""

    __slots__ = ("_conn", "body", "chunked", "content_length", "has_body", "headers", "sent")

    def __init__(self, body: RequestBody) -> None:
        self._conn = Carrier()
        self.body = body
        self.headers = [("x-a", "1"), ("x-a", "2")]
        self.chunked, self.content_length, self.has_body = True, None, body is not NO_BODY
        self.sent: list[tuple[int, list[tuple[str, str]], bytes, bool]] = []

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
        self.sent.append((status, headers, body, close))


def test_a_problem_is_an_rfc9457_document_with_the_request_id_and_no_store():
    ex = Exchange(NO_BODY)
    ex.problem(429, "Slow down.", "rid-9", [("retry-after", "3")], close=True)
    [(status, headers, body, close)] = ex.sent
    assert status == 429 and close
    assert headers == [("content-type", "application/problem+json"), ("x-request-id", "rid-9"),
                       ("cache-control", "no-store"), ("retry-after", "3")]
    doc = json.loads(body)
    assert (doc["status"], doc["detail"], doc["request_id"]) == (429, "Slow down.", "rid-9")


async def test_the_body_is_read_whole_whether_it_has_all_arrived_or_not():
    body = RequestBody(Carrier(), 30.0)
    ex = Exchange(body)
    body.feed(b"ab")
    body.feed(b"c")
    body.finish()
    assert await ex.read_body() == b"abc" and ex.body_complete and ex.body_received
    assert await Exchange(NO_BODY).read_body() == b""


def test_the_connection_tells_the_peer_and_the_first_header_value():
    ex = Exchange(NO_BODY)
    assert (ex.peer, ex.tls, ex.peer_cert) == ("192.0.2.9", True, b"der")
    assert ex.header("x-a") == "1" and ex.header("x-b") is None
