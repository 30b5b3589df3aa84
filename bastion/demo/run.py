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
from bastion.server.app import Runtime
from bastion.server.settings import install_uvloop

IDP_PORT = 8081
UPSTREAM_PORT = 8082
UPSTREAM_B_PORT = 8083  # the second target of the orders API, a process of its own
ADMIN_PORT = 9901


def render_config(directory: Path, port: int, issuer: str, upstream: str, now: datetime,
                  admin_port: int = ADMIN_PORT, upstream_b: str | None = None) -> Path:
    """Write the demo config, with an exception created now and expiring in 30 days. With `upstream_b`, the
    orders API is a pool of two targets."""
    text = resources.files("bastion.demo").joinpath("bastion.yaml").read_text()
    fields = {
        "{orders_upstream}": f"[{upstream}, {upstream_b}]" if upstream_b else upstream,
        "{port}": str(port), "{admin_port}": str(admin_port), "{issuer}": issuer, "{upstream}": upstream,
        "{created}": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "{expires}": (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key, value in fields.items():
        text = text.replace(key, value)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bastion.yaml"
    path.write_text(text)
    return path


def instructions(port: int, issuer: str, config: Path, upstream_port: int = UPSTREAM_PORT,
                 admin_port: int = ADMIN_PORT, upstream_b_port: int = UPSTREAM_B_PORT, upstream_b_pid: int = 0) -> str:
    gw = f"http://127.0.0.1:{port}"
    bastion = Path(sys.executable).parent / "bastion"  # the virtualenv's command, which `make demo` ran
    return f"""
Bastion demo is running. In another shell, put the `bastion` command on your PATH first:
  export PATH="{bastion.parent}:$PATH"

  gateway   {gw}          (config: {config})
  IdP       {issuer}     (JWKS at {issuer}/jwks.json)
  upstream  http://127.0.0.1:{upstream_port}     (echoes what reached it)
  orders-b  http://127.0.0.1:{upstream_b_port}     (second target of the orders API, pid {upstream_b_pid})
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

  # 5b. a business flow (API6): alice may create orders, but not without browsing the catalog first
  #     -> 403 (flow_order, flow "purchase" step "order" in the audit log); after browsing -> 200
  curl -si {gw}/orders/ -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"item": 1}}'
  curl -s {gw}/catalog/products -H "Authorization: Bearer $TOKEN" >/dev/null
  curl -s {gw}/orders/ -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"item": 1}}'

  # 6. denied: an expired token, and one minted for another audience -> 401 invalid_token
  EXPIRED=$(curl -s '{issuer}/token?user=alice&ttl=-60')
  curl -si {gw}/orders/42 -H "Authorization: Bearer $EXPIRED"
  OTHER=$(curl -s '{issuer}/token?user=alice&aud=api://other')
  curl -si {gw}/orders/42 -H "Authorization: Bearer $OTHER"

  # 7. unknown route -> 404, never forwarded
  curl -si {gw}/admin/secrets

  # 8. the exception EXC-DEMO-1 lets /catalog/status through without a token until it expires
  curl -s {gw}/catalog/status
  bastion explain -c {config} catalog/status

  # 9. create-order also runs the OWASP CRS (paranoia 1): a SQL injection in a JSON field -> 400;
  #    the audit event names the CRS rules, the variable (ARGS:json.note) and a bounded excerpt
  ATTACK='{{"item": 1, "note": "1\\u0027 UNION SELECT password FROM users--"}}'
  curl -si {gw}/orders/ -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$ATTACK"
  bastion explain -c {config} orders/create-order

  # 10. the orders API runs on two targets; stop one (or freeze it: kill -STOP), requests keep succeeding
  for i in 1 2 3 4; do curl -s {gw}/orders/42 -H "Authorization: Bearer $TOKEN" | grep -o '"instance":"[^"]*"'; done
  kill {upstream_b_pid}
  for i in 1 2 3 4; do curl -s {gw}/orders/42 -H "Authorization: Bearer $TOKEN" | grep -o '"instance":"[^"]*"'; done
  grep upstream.ejected {config.parent / 'audit.jsonl'}

  # 11. attack it: every refusal the config promises, with the probe identity the demo trusts
  bastion probe -c {config} --target {gw} | tail -3

  # 12. what the auditors see: the audit log, and the posture report
  bastion report -c {config} | head -20
  tail -n 3 {config.parent / 'audit.jsonl'}

Ctrl-C stops the demo.
"""


async def _second_target(port: int) -> asyncio.subprocess.Process:
    """The orders API's second target, a process of its own so that it can be stopped like a real instance."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bastion.demo.upstream", str(port),
                                                "orders-b")
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return proc
    proc.kill()
    raise OSError(f"the second demo upstream did not start on port {port}")


async def run_demo(port: int, *, idp_port: int = IDP_PORT, upstream_port: int = UPSTREAM_PORT,
                   admin_port: int = ADMIN_PORT, ready: asyncio.Event | None = None,
                   stop: asyncio.Event | None = None, info: dict[str, object] | None = None,
                   upstream_b_port: int = UPSTREAM_B_PORT) -> None:
    idp = await start_idp("127.0.0.1", idp_port)
    upstream = await start_upstream("127.0.0.1", upstream_port, "orders-a")
    second = await _second_target(upstream_b_port)
    with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
        config = render_config(Path(tmp), port, idp.issuer, f"http://127.0.0.1:{upstream_port}",
                               datetime.now(UTC), admin_port, f"http://127.0.0.1:{upstream_b_port}")
        runtime = Runtime(config)
        await runtime.start()
        print(instructions(port, idp.issuer, config, upstream_port, admin_port, upstream_b_port, second.pid),
              flush=True)
        if info is not None:
            info.update(config=config, issuer=idp.issuer, runtime=runtime, second_target=second)
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
            if second.returncode is None:
                second.kill()
            await second.wait()
            await idp.close()


def main(port: int = 8080) -> int:
    install_uvloop()
    try:
        asyncio.run(run_demo(port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"bastion demo: cannot start: {exc} (are ports {port}, {IDP_PORT}, {UPSTREAM_PORT}, "
              f"{UPSTREAM_B_PORT} and {ADMIN_PORT} free?)", file=sys.stderr)
        return 1
    return 0
