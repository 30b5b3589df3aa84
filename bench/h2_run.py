"""HTTP/2 benchmark: h2load against Bastion's h2c listener vs. its HTTP/1.1 path, one gateway process.

    python bench/h2_run.py [--requests 20000] [--clients 16] [--streams 10]

Starts the demo echo upstream and a gateway (every control off) serving HTTP/1.1 and h2c on one port
(`bastion.server.dispatch`), then runs h2load (Debian package `nghttp2-client`) over HTTP/2 and over
HTTP/1.1 (`--h1`), and prints requests/s. The gateway runs in this process on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CONFIG = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
  admin: {enabled: false, port: 0}
  audit: {enabled: false}
classes:
  open:
    identity: {required: false}
apis:
  - {name: bench, owner: bench@example.com, class: open, upstream: "http://127.0.0.1:UPSTREAM", base_path: /b,
     routes: [{name: r, path: /x, methods: [GET]}]}
"""


def _h2load(url: str, args: argparse.Namespace, h1: bool) -> str:
    command = ["h2load", "-n", str(args.requests), "-c", str(args.clients), "-m", str(1 if h1 else args.streams),
               *(["--h1"] if h1 else []), url]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


async def main(args: argparse.Namespace) -> None:
    from bastion.demo.upstream import start_upstream
    from bastion.server.app import Runtime, server_limits
    from bastion.server.dispatch import protocol_factory

    upstream = await start_upstream("127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bastion.yaml"
        path.write_text(textwrap.dedent(CONFIG).replace("UPSTREAM", str(up_port)))
        runtime = Runtime(path)
        try:
            await runtime.start()
        except Exception:  # an audit section this build does not know: run without it
            path.write_text(textwrap.dedent(CONFIG).replace("  audit: {enabled: false}\n", "")
                            .replace("UPSTREAM", str(up_port)))
            runtime = Runtime(path)
            await runtime.start()
        gateway = runtime.gateway
        gw = runtime.gateway.compiled.config.model.gateway
        factory = protocol_factory(gateway.handle, server_limits(gw), runtime.connections,
                                   gateway.on_protocol_error, h2c=True)
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/b/x"
        for label, h1 in (("HTTP/2 (h2c)", False), ("HTTP/1.1", True)):
            out = await asyncio.to_thread(_h2load, url, args, h1)
            rps = re.search(r"finished in [^,]+, ([0-9.]+) req/s", out)
            done = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed", out)
            print(f"{label:14} {rps.group(1) if rps else '?':>10} req/s  "
                  f"succeeded {done.group(1) if done else '?'}, failed {done.group(2) if done else '?'}")
        server.close()
        await runtime.stop(drain_timeout=1.0)
    upstream.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per HTTP/2 connection")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bastion.server.app import install_uvloop

    install_uvloop()
    asyncio.run(main(parser.parse_args()))
