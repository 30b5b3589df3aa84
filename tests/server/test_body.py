"""RequestBody, the protocol-neutral request body: what the protocol feeds, what the handler reads, its limit,
its first failure, and what its owner (HTTP/1.1 socket reading, HTTP/2 flow-control window) is told."""

from __future__ import annotations

import asyncio

import pytest

from bastion.http.framing import FramingError
from bastion.server.body import NO_BODY, BodyMalformed, BodyTimeout, BodyTooLarge, ClientGone, RequestBody


class Owner:
    def __init__(self) -> None:
        self.events: list[str] = []

    def body_read(self) -> None:
        self.events.append("read")

    def body_failed(self) -> None:
        self.events.append("failed")


# (name, steps, what read() gives: bytes or an exception type, owner events)
STEPS = [
    ("chunks_are_read_joined", [("feed", b"ab"), ("feed", b"c"), ("finish",)], b"abc", ["read"]),
    ("under_the_limit", [("limit", 3), ("feed", b"abc"), ("finish",)], b"abc", ["read"]),
    ("over_the_limit_as_it_arrives", [("limit", 3), ("feed", b"ab"), ("feed", b"cd")], BodyTooLarge, ["failed"]),
    ("limit_set_after_it_arrived", [("feed", b"abcd"), ("limit", 3)], BodyTooLarge, ["failed"]),
    ("the_first_failure_wins", [("fail", BodyMalformed(FramingError(400, "bad_chunk", "x"))), ("fail", ClientGone())],
     BodyMalformed, ["failed"]),
    ("bytes_after_a_failure_are_refused", [("fail", ClientGone()), ("feed", b"late")], ClientGone, ["failed"]),
    ("empty_finished_body", [("finish",)], b"", []),
]


@pytest.mark.parametrize(("name", "steps", "read", "events"), STEPS, ids=[c[0] for c in STEPS])
async def test_body_steps(name, steps, read, events):
    owner = Owner()
    body = RequestBody(owner, 30.0)
    for step in steps:
        if step[0] == "feed":
            body.feed(step[1])
        elif step[0] == "limit":
            body.set_limit(step[1])
        elif step[0] == "fail":
            body.fail(step[1])
        else:
            body.finish()
    if isinstance(read, bytes):
        assert await body.read() == read
        if read:
            assert await body.read() == b""
        assert body.complete and body.received
    else:
        with pytest.raises(read):
            await body.read()
        assert body.failed and not body.received
    assert owner.events == events
    assert body.buffered == 0 or body.failed


async def test_a_waiting_read_is_woken_by_data_and_watched_by_the_sweep_only_while_it_waits():
    body = RequestBody(Owner(), 30.0)
    reader = asyncio.ensure_future(body.read())
    await asyncio.sleep(0)
    assert body.deadline != float("inf")
    body.feed(b"x")
    assert await reader == b"x"
    assert body.deadline == float("inf")


async def test_expiry_fails_only_a_waiting_read():
    body = RequestBody(Owner(), 30.0)
    body.expire()  # nobody waits: nothing happens
    assert not body.failed
    reader = asyncio.ensure_future(body.read())
    await asyncio.sleep(0)
    body.expire()
    with pytest.raises(BodyTimeout):
        await reader


def test_a_slow_body_is_too_slow_once_the_grace_has_passed():
    body = RequestBody(Owner(), 30.0)
    body.feed(b"x" * 10)
    assert not body.too_slow(100.0, rate=100, grace=5.0)  # the first byte starts the clock
    assert not body.too_slow(104.0, rate=100, grace=5.0)  # within the grace
    assert body.too_slow(106.0, rate=100, grace=5.0)  # 10 bytes in 6 s: under 100 B/s


async def test_no_body_is_shared_and_nothing_poisons_it():
    NO_BODY.fail(ClientGone())
    NO_BODY.set_limit(0)
    assert not NO_BODY.feed(b"x")
    assert await NO_BODY.read() == b""
    assert NO_BODY.complete and NO_BODY.received and NO_BODY.limit is None


async def test_a_body_that_has_all_arrived_is_taken_whole_without_waiting():
    owner = Owner()
    body = RequestBody(owner, 30.0)
    body.feed(b"ab")
    assert body.whole() is None  # more may come: read it
    body.feed(b"cd")
    body.finish()
    assert body.whole() == b"abcd" and owner.events == ["read"]
    assert body.whole() == b"" and await body.read() == b""
    failed = RequestBody(owner, 30.0)
    failed.feed(b"x")
    failed.finish()
    failed.set_limit(0)
    assert failed.whole() is None  # the read raises the failure
    with pytest.raises(BodyTooLarge):
        await failed.read()
