"""gRPC through the configured gateway: grpcio client -> h2c listener -> pipeline -> grpcio server."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import grpc
import pytest

from bastion.demo.idp import start_idp
from bastion.server.app import Runtime
from tests.grpc.echo import SERVICE, echo_service

pytestmark = pytest.mark.asyncio


CONFIG = """
version: 1
gateway:
  listeners: [{{address: 127.0.0.1, port: 0, h2c: true}}]
  admin: {{enabled: false, port: 0}}
classes:
  internal:
    identity: {{required: true, methods: [jwt]}}
    traffic:
      rate_limits: [{{name: per-caller, limit: 5, window: 1m, key: consumer}}]
providers:
  jwt:
    - {{name: idp, issuer: "{issuer}", audiences: [api://demo], algorithms: [ES256], jwks_uri: "{issuer}/jwks.json",
       consumer_claim: sub}}
apis:
  - name: echo
    owner: team-echo@example.com
    class: internal
    upstream: http://127.0.0.1:{upstream}
    grpc:
      methods: [/test.v1.Echo/Unary, /test.v1.Echo/Chat, /test.v1.Echo/Slow]
      max_message_bytes: 1KiB
      max_timeout: 500ms
"""


def _call(channel: grpc.aio.Channel, method: str, streaming: bool = False):
    path = f"/{SERVICE}/{method}"
    if streaming:
        return channel.stream_stream(path, request_serializer=None, response_deserializer=None)
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


async def test_grpc_methods_get_the_same_controls(tmp_path):
    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers((echo_service("x-bastion-subject", slow_seconds=3),))
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    idp = await start_idp("127.0.0.1", 0)
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(issuer=idp.issuer, upstream=up_port)))
    runtime = Runtime(path)
    await runtime.start()
    try:
        port = runtime.bound[0][1]
        token = idp.mint("alice", ["echo"], "api://demo")
        meta = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await _call(channel, "Unary")(b"hi", metadata=meta, timeout=5) == b"hi|alice"
            replies = [r async for r in _call(channel, "Chat", True)(iter([b"a", b"b"]), metadata=meta, timeout=5)]
            assert replies == [b"A", b"B"]

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(channel, "Unary")(b"hi", timeout=5)  # no token
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(channel, "Hidden")(b"hi", metadata=meta, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(channel, "Unary")(b"x" * 2048, metadata=meta, timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(channel, "Slow")(b"x", metadata=meta, timeout=5)  # cut to max_timeout 500ms
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(grpc.aio.AioRpcError) as err:  # the 5th and later calls of alice this minute
                for _ in range(5):
                    await _call(channel, "Unary")(b"hi", metadata=meta, timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await runtime.stop(drain_timeout=0.5)
        await idp.close()
        await upstream.stop(None)


async def test_a_busy_honest_grpc_client_is_not_mistaken_for_a_flood(tmp_path):
    """1,500 calls, 64 in flight: the client's window updates and stream turnover stay within the limits."""
    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers((echo_service("x-bastion-subject", slow_seconds=3),))
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    config = CONFIG.replace("    identity: {{required: true, methods: [jwt]}}\n",
                            "    identity: {{required: false, methods: []}}\n")
    config = config.replace("rate_limits: [{{name: per-caller, limit: 5, window: 1m, key: consumer}}]", "{{}}")
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(config.format(issuer="http://127.0.0.1:9", upstream=up_port)))
    runtime = Runtime(path)
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.bound[0][1]}") as channel:
            call = _call(channel, "Unary")
            pending = iter(range(1500))

            failures: list[tuple[Any, str]] = []

            async def worker() -> None:
                for _ in pending:
                    try:  # the deadline only catches a hang: a loaded CI machine is slow, not a flood
                        await call(b"x", timeout=60)
                    except grpc.aio.AioRpcError as exc:
                        failures.append((exc.code(), exc.details() or ""))

            await asyncio.gather(*(worker() for _ in range(64)))
            assert failures == []
    finally:
        await runtime.stop(drain_timeout=0.5)
        await upstream.stop(None)


async def test_owner_rules_read_the_request_message(tmp_path):
    """With a descriptor set, an owner rule binds a request-message field to the caller (BOLA over gRPC)."""
    import subprocess
    import sys

    (tmp_path / "orders.proto").write_text(textwrap.dedent("""
        syntax = "proto3";
        package shop.v1;
        message GetOrder { string account_id = 1; int64 order_id = 2; }
        message Order { string status = 1; }
        service Orders { rpc Get(GetOrder) returns (Order); }
    """))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}",
                    f"--descriptor_set_out={tmp_path / 'orders.pb'}", "orders.proto"], check=True)

    async def get(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"\x0a\x02ok"

    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("shop.v1.Orders", {
        "Get": grpc.unary_unary_rpc_method_handler(get)}),))
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    idp = await start_idp("127.0.0.1", 0)
    config = CONFIG.replace("rate_limits: [{{name: per-caller, limit: 5, window: 1m, key: consumer}}]", "{{}}")
    config = config.replace("    grpc:\n      methods: [/test.v1.Echo/Unary, /test.v1.Echo/Chat, /test.v1.Echo/Slow]\n",
                            "    grpc: {{descriptor_set: orders.pb}}\n"
                            "    policy: {{authz: {{owner: [{{from: body./account_id, in: \"claim:accounts\"}}]}}}}\n")
    config = config.replace("      max_message_bytes: 1KiB\n      max_timeout: 500ms\n", "")
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(config.format(issuer=idp.issuer, upstream=up_port)))
    runtime = Runtime(path)
    await runtime.start()

    def message(account: str, order: int) -> bytes:
        encoded = account.encode()
        return b"\x0a" + bytes([len(encoded)]) + encoded + b"\x10" + bytes([order])

    try:
        token = idp.mint("alice", ["orders"], "api://demo", accounts=["acc-1", "acc-2"])
        meta = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.bound[0][1]}") as channel:
            call = channel.unary_unary("/shop.v1.Orders/Get", request_serializer=None, response_deserializer=None)
            assert await call(message("acc-2", 7), metadata=meta, timeout=5) == b"\x0a\x02ok"
            for other in ("acc-3", "acc-4", "acc-99"):  # iterating other callers' accounts: refused each time
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(message(other, 7), metadata=meta, timeout=5)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"\xff\xff\xff", metadata=meta, timeout=5)  # not a valid message
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await runtime.stop(drain_timeout=0.5)
        await idp.close()
        await upstream.stop(None)
