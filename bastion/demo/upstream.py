"""A demo upstream service: answers every request with JSON describing what reached it.

It shows what Bastion forwards: the verified identity headers it set, and that spoofed ones never arrive.
"""

from __future__ import annotations

import asyncio
import functools

import orjson

from bastion.server.http1 import Exchange, Http1Connection, ServerLimits


async def _echo(ex: Exchange, instance: str = "") -> None:
    body = await ex.read_body()
    path = ex.target.split("?", 1)[0]
    if path.endswith("/slow"):
        await asyncio.sleep(2)
    if path.endswith("/fail"):
        leak = b"Traceback (most recent call last): db.internal:5432 password=hunter2"
        return ex.respond(500, [("content-type", "text/plain"), ("server", "demo/1.0")], leak)
    doc = {
        "service": "demo-upstream",
        "instance": instance,
        "method": ex.method,
        "target": ex.target,
        "headers": {n: v for n, v in ex.headers},
        "body_bytes": len(body),
    }
    ex.respond(200, [("content-type", "application/json"), ("server", "demo/1.0"),
                     ("x-powered-by", "demo")], orjson.dumps(doc))


async def start_upstream(host: str = "127.0.0.1", port: int = 0, instance: str = "") -> asyncio.base_events.Server:
    """Start the echo upstream; `port=0` picks a free port (see `server.sockets[0].getsockname()`). `instance`
    names it in every answer (a pool's targets tell which one answered)."""
    loop = asyncio.get_running_loop()
    connections: set[Http1Connection] = set()
    limits = ServerLimits(max_header_bytes=64 * 1024)  # the gateway adds its own fields to a head at its limit
    return await loop.create_server(
        lambda: Http1Connection(functools.partial(_echo, instance=instance), limits, connections), host, port)


def main() -> None:
    """`python -m bastion.demo.upstream PORT [NAME]`: run the echo upstream on its own (tests, benchmarks)."""
    import sys

    from bastion.server.settings import install_uvloop

    async def serve(port: int, instance: str) -> None:
        await start_upstream("127.0.0.1", port, instance)
        await asyncio.Event().wait()

    install_uvloop()
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else ""))


if __name__ == "__main__":
    main()
