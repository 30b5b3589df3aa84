"""The HTTP batch sink: HEC-shaped bodies with the bearer token; anything but 2xx is a failed delivery."""

from __future__ import annotations

import pytest

from bastion.audit.config import AuditSinkConfig
from bastion.audit.sinks import SinkError, build_sink
from bastion.audit.sinks.http import HttpSink
from tests.audit.receivers import HttpCollector


async def test_batch_with_bearer_token_and_refusals():
    collector = await HttpCollector(token="t0k3n").start()
    try:
        sink = HttpSink("hec", collector.url, token="t0k3n", timeout=1.0)
        await sink.deliver([b'{"metadata":{"uid":"a"}}\n', b'{"metadata":{"uid":"b"}}\n'])
        assert [e["metadata"]["uid"] for e in collector.raw] == ["a", "b"]
        wrong = HttpSink("hec", collector.url, token="nope", timeout=1.0)
        with pytest.raises(SinkError, match="status 401"):
            await wrong.deliver([b'{"metadata":{"uid":"c"}}\n'])
        collector.status = 503
        with pytest.raises(SinkError, match="status 503"):
            await sink.deliver([b'{"metadata":{"uid":"d"}}\n'])
        ndjson = HttpSink("nd", collector.url, token="t0k3n", body="ndjson")
        collector.status = 200
        await ndjson.deliver([b'{"metadata":{"uid":"e"}}\n'])
        assert [e["metadata"]["uid"] for e in collector.raw] == ["a", "b", "e"]
    finally:
        await collector.stop()


def test_token_comes_from_the_environment(tmp_path, monkeypatch):
    config = AuditSinkConfig(type="http", url="https://siem.example.net/collector", token_env="BASTION_TEST_HEC")
    with pytest.raises(ValueError, match="BASTION_TEST_HEC"):
        build_sink(config, "hec", tmp_path)
    monkeypatch.setenv("BASTION_TEST_HEC", "from-env")
    sink = build_sink(config, "hec", tmp_path)
    assert isinstance(sink, HttpSink) and ("Authorization", "Bearer from-env") in sink._headers


async def test_the_same_batch_carries_the_same_idempotency_key():
    collector = await HttpCollector(token="t0k3n").start()
    try:
        sink = HttpSink("hec", collector.url, token="t0k3n", timeout=1.0)
        batch = [b'{"metadata":{"uid":"a"}}\n', b'{"metadata":{"uid":"b"}}\n']
        await sink.deliver(batch)
        await sink.deliver(batch)  # a resend after a lost answer
        await sink.deliver(batch[:1])
        assert collector.keys[0] == collector.keys[1] != collector.keys[2]
        assert len(collector.keys[0]) == 32
    finally:
        await collector.stop()
