"""OpenTelemetry: a real OTLP/HTTP endpoint in the test receives the gateway's spans; the tree is checked."""

from __future__ import annotations

import asyncio
import http.server
import json
import textwrap
import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bastion.server.app import Runtime
from tests.helpers import FILE_AUDIT_GATEWAY_FORMAT, request, upstream_server

CONFIG = FILE_AUDIT_GATEWAY_FORMAT + """
  tracing: {{enabled: {enabled}, endpoint: "http://127.0.0.1:{otlp}/v1/traces", sample_ratio: {ratio},
            export_interval: 100ms, service_name: gw-test}}
classes:
  open:
    identity: {{required: false, methods: []}}
    traffic: {{rate_limits: [{{name: all, key: client_ip, limit: 100, window: 1m}}]}}
  closed:
    identity: {{required: true, methods: [api_key]}}
apis:
  - name: shop
    owner: o@example.com
    class: open
    upstream: http://127.0.0.1:{upstream}
    routes: [{{name: items, path: /items, methods: [GET]}}]
  - name: vault
    owner: o@example.com
    class: closed
    upstream: http://127.0.0.1:{upstream}
    base_path: /vault
    routes: [{{name: keys, path: /keys, methods: [GET]}}]
"""


class Collector:
    """An OTLP/HTTP receiver in its own thread (as a collector is another process): POST /v1/traces with a
    protobuf ExportTraceServiceRequest, answered 200."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.paths: list[str] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                collector.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-type") == "application/x-protobuf":
                    collector.receive(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> int:
        self.thread.start()
        return self.server.server_address[1]

    def receive(self, export: ExportTraceServiceRequest) -> None:
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append({
                        "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "kind": span.kind,
                        "service": service.get("service.name"),
                        "attrs": {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes},
                    })

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _run(tmp_path: Path, *, enabled: bool = True, ratio: float = 1.0, requests=()):
    collector = Collector()
    otlp = collector.start()
    answers = []
    async with upstream_server() as up:
        path = tmp_path / "bastion.yaml"
        path.write_text(textwrap.dedent(CONFIG.format(enabled=str(enabled).lower(), otlp=otlp, ratio=ratio,
                                                      upstream=up)))
        runtime = Runtime(path)
        await runtime.start()
        try:
            for target, headers in requests:
                answers.append(await request(runtime.bound[0][1], "GET", target, headers))
        finally:
            await runtime.stop(drain_timeout=0.5)  # flushes the span queue
    await asyncio.sleep(0.1)
    collector.close()
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    return collector, answers, [e for e in events if e.get("class_uid") in (6003, 3002) and "request_id"
                                in e.get("unmapped", {}).get("bastion", {})]


async def test_the_span_tree_of_an_allowed_and_a_denied_request(tmp_path):
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    collector, answers, events = await _run(tmp_path, requests=[
        ("/items", {"traceparent": caller}), ("/vault/keys", {})])
    assert [a[0] for a in answers] == [200, 401]
    spans = collector.spans
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert {s["service"] for s in spans} == {"gw-test"}
    roots = [s for s in spans if s["name"].startswith("GET ")]
    allowed = next(s for s in roots if s["name"] == "GET items")
    denied = next(s for s in roots if s["name"] == "GET keys")
    # the caller's trace continues through the gateway: same trace id, the caller's span is the parent
    assert allowed["trace"] == "0af7651916cd43dd8448eb211c80319c" and allowed["parent"] == "b7ad6b7169203331"
    assert allowed["kind"] == 2 and allowed["attrs"]["http.response.status_code"] == 200  # SERVER
    assert denied["parent"] == "" and denied["attrs"]["bastion.reason"] == "credential_missing"
    assert denied["attrs"]["http.response.status_code"] == 401 and denied["trace"] != allowed["trace"]

    def children(parent):
        return sorted(s["name"] for s in spans if s["parent"] == parent["id"])

    # one span per stage that ran, the upstream call, the audit hand-off
    assert children(allowed) == ["audit", "stage blocklist", "stage input", "stage traffic.rate_limits", "upstream"]
    assert children(denied) == ["audit", "stage blocklist", "stage identity"]  # denied: never forwarded
    identity = next(s for s in spans if s["name"] == "stage identity")
    assert identity["attrs"] == {"bastion.decision": "deny", "bastion.reason": "credential_missing"}
    upstream = next(s for s in spans if s["name"] == "upstream" and s["parent"] == allowed["id"])
    assert upstream["kind"] == 3 and upstream["attrs"]["http.response.status_code"] == 200  # CLIENT
    # the upstream saw the gateway's client span as its parent
    seen = json.loads(answers[0][2])["headers"]["traceparent"]
    assert seen == f"00-{allowed['trace']}-{upstream['id']}-01"
    # the audit events carry the trace ids
    by_request = {e["unmapped"]["bastion"]["route"]: e["unmapped"]["bastion"]["trace_id"] for e in events}
    assert by_request == {"items": allowed["trace"], "keys": denied["trace"]}


async def test_sampling_off_exports_nothing_but_keeps_trace_ids(tmp_path):
    collector, answers, events = await _run(tmp_path, ratio=0.0, requests=[("/items", {})] * 3)
    assert [a[0] for a in answers] == [200] * 3
    assert collector.spans == []
    assert len({e["unmapped"]["bastion"]["trace_id"] for e in events}) == 3  # still correlated, just not recorded
    seen = json.loads(answers[0][2])["headers"]["traceparent"]
    assert int(seen[-2:], 16) & 1 == 0  # W3C trace-flags: the sampled bit is off, the upstream is told so


async def test_off_by_default_sends_nothing_and_adds_nothing(tmp_path):
    collector, answers, events = await _run(tmp_path, enabled=False, requests=[("/items", {})])
    assert answers[0][0] == 200 and collector.spans == [] and collector.paths == []
    assert "trace_id" not in events[0]["unmapped"]["bastion"]


def test_disabled_tracing_imports_no_opentelemetry():
    import subprocess
    import sys

    code = ("import sys; from bastion.server.proxy import Gateway; import bastion.tracing; "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
    assert time.monotonic() - started < 60


async def test_a_grpc_call_has_its_upstream_span(tmp_path):
    import grpc

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.v1.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    collector = Collector()
    otlp = collector.start()
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(f"""
        version: 1
        gateway:
          listeners: [{{address: 127.0.0.1, port: 0, h2c: true}}]
          admin: {{enabled: false, port: 0}}
          tracing: {{enabled: true, endpoint: "http://127.0.0.1:{otlp}/v1/traces", export_interval: 100ms}}
        classes:
          open: {{identity: {{required: false, methods: []}}}}
        apis:
          - name: echo
            owner: o@example.com
            class: open
            upstream: http://127.0.0.1:{up_port}
            grpc: {{methods: [/t.v1.Echo/Unary]}}
        """))
    runtime = Runtime(path)
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.bound[0][1]}") as channel:
            call = channel.unary_unary("/t.v1.Echo/Unary", request_serializer=None, response_deserializer=None)
            assert await call(b"hi", timeout=5) == b"hi"
    finally:
        await runtime.stop(drain_timeout=0.5)
        await upstream.stop(None)
        collector.close()
    [root] = [s for s in collector.spans if s["parent"] == ""]
    [up] = [s for s in collector.spans if s["name"] == "upstream"]
    assert up["parent"] == root["id"] and up["kind"] == 3 and up["attrs"]["rpc.grpc.status_code"] == 0
