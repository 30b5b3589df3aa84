"""`bastion demo`: a demo identity provider, a demo upstream and the gateway, in one process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from bastion.demo.idp import start_idp
from bastion.demo.upstream import start_upstream
from bastion.server.app import Runtime, install_uvloop

IDP_PORT = 8081
UPSTREAM_PORT = 8082
ADMIN_PORT = 9901


def render_config(directory: Path, port: int, issuer: str, upstream: str, now: datetime,
                  admin_port: int = ADMIN_PORT) -> Path:
    """Write the demo config, with an exception created now and expiring in 30 days."""
    text = resources.files("bastion.demo").joinpath("bastion.yaml").read_text()
    fields = {
        "{port}": str(port), "{admin_port}": str(admin_port), "{issuer}": issuer, "{upstream}": upstream,
        "{created}": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "{expires}": (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key, value in fields.items():
        text = text.replace(key, value)
    path = directory / "bastion.yaml"
    path.write_text(text)
    return path


def instructions(port: int, issuer: str, config: Path, upstream_port: int = UPSTREAM_PORT,
                 admin_port: int = ADMIN_PORT) -> str:
    gw = f"http://127.0.0.1:{port}"
    return f"""
Bastion demo is running.
  gateway   {gw}          (config: {config})
  IdP       {issuer}     (JWKS at {issuer}/jwks.json)
  upstream  http://127.0.0.1:{upstream_port}     (echoes what reached it)
  admin     http://127.0.0.1:{admin_port}     (/healthz /readyz /metrics /config)
  audit     {config.parent / 'audit.jsonl'}

Try:
  # 1. get a token for alice from the demo identity provider
  TOKEN=$(curl -s '{issuer}/token?user=alice')

  # 2. allowed: a verified caller; the upstream sees the identity Bastion verified, not what you claim
  curl -s {gw}/orders/42 -H "Authorization: Bearer $TOKEN" -H 'X-User-Id: root'

  # 3. denied: no token -> 401 with an RFC 9457 problem document and WWW-Authenticate: Bearer
  curl -si {gw}/orders/42

  # 4. denied: a forged token (alg none) -> 401 invalid_token; the audit log has the exact reason
  curl -si {gw}/orders/42 -H 'Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.'

  # 5. denied: bob may read orders but not create them -> 403 insufficient_scope
  BOB=$(curl -s '{issuer}/token?user=bob')
  curl -si {gw}/orders/ -X POST -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' -d '{{"item": 1}}'

  # 6. unknown route -> 404, never forwarded
  curl -si {gw}/admin/secrets

  # 7. the exception EXC-DEMO-1 lets /catalog/status through without a token until it expires
  curl -s {gw}/catalog/status
  bastion explain -c {config} catalog/status

  # 8. create-order also runs the OWASP CRS (paranoia 1): a SQL injection in a JSON field -> 400;
  #    the audit event names the CRS rules, the variable (ARGS:json.note) and a bounded excerpt
  curl -si {gw}/orders/ -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"item": 1, "note": "1\\u0027 UNION SELECT password FROM users--"}}'
  bastion explain -c {config} orders/create-order

  # 9. what the auditors see
  tail -n 3 {config.parent / 'audit.jsonl'}

Ctrl-C stops the demo.
"""


async def run_demo(port: int, *, idp_port: int = IDP_PORT, upstream_port: int = UPSTREAM_PORT,
                   admin_port: int = ADMIN_PORT, ready: asyncio.Event | None = None,
                   stop: asyncio.Event | None = None, info: dict[str, object] | None = None) -> None:
    idp = await start_idp("127.0.0.1", idp_port)
    upstream = await start_upstream("127.0.0.1", upstream_port)
    with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
        config = render_config(Path(tmp), port, idp.issuer, f"http://127.0.0.1:{upstream_port}",
                               datetime.now(UTC), admin_port)
        runtime = Runtime(config)
        await runtime.start()
        print(instructions(port, idp.issuer, config, upstream_port, admin_port), flush=True)
        if info is not None:
            info.update(config=config, issuer=idp.issuer, runtime=runtime)
        if ready is not None:
            ready.set()
        try:
            if stop is None:
                await runtime.run_forever()  # until SIGINT/SIGTERM; drains on the way out
            else:
                await stop.wait()
                await runtime.stop(drain_timeout=1.0)
        finally:
            upstream.close()
            await idp.close()


def main(port: int = 8080) -> int:
    install_uvloop()
    try:
        asyncio.run(run_demo(port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"bastion demo: cannot start: {exc} (are ports {port}, {IDP_PORT}, {UPSTREAM_PORT} and "
              f"{ADMIN_PORT} free?)", file=sys.stderr)
        return 1
    return 0
