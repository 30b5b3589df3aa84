"""A real grpcio echo service for the gRPC tests: every call shape, a slow method, one the gateway never declares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

SERVICE = "test.v1.Echo"


def echo_service(echoed_metadata: str, slow_seconds: float) -> grpc.GenericRpcHandler:
    """`Unary` and `Hidden` answer the request + b"|" + the value of the `echoed_metadata` header they received
    (what the gateway in between added); `Stream` sends `int(request)` messages, `Collect` joins what it received,
    `Chat` upper-cases each message back, `Slow` answers after `slow_seconds`."""

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request + b"|" + dict(context.invocation_metadata()).get(echoed_metadata, "").encode()

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        for n in range(int(request)):
            yield b"m%d" % n

    async def collect(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return b"".join([r async for r in requests])

    async def chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.upper()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(slow_seconds)
        return request

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Hidden": grpc.unary_unary_rpc_method_handler(unary),  # served upstream, never declared at the gateway
    })
