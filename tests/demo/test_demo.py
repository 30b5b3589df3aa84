"""`bastion demo` works as its printed instructions promise (on free ports)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from bastion.commands import explain
from bastion.demo.run import run_demo
from tests.helpers import free_port, request

pytestmark = pytest.mark.asyncio


async def test_demo_allows_denies_and_honours_its_exception(capsys):
    port, idp_port, up_port, admin_port = free_port(), free_port(), free_port(), free_port()
    ready, stop, info = asyncio.Event(), asyncio.Event(), {}
    task = asyncio.create_task(run_demo(port, idp_port=idp_port, upstream_port=up_port, admin_port=admin_port,
                                        ready=ready, stop=stop, info=info, upstream_b_port=free_port()))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        printed = capsys.readouterr().out
        assert f"curl -s http://127.0.0.1:{port}/orders/42" in printed
        _, _, token = await request(idp_port, "GET", "/token?user=alice")
        token = token.decode().strip()

        status, _, body = await request(port, "GET", "/orders/42",
                                        {"Authorization": f"Bearer {token}", "X-User-Id": "root"})
        seen = json.loads(body)["headers"]
        assert status == 200 and seen["x-bastion-subject"] == "alice" and "x-user-id" not in seen
        assert "authorization" not in seen  # the credential stops at the gateway

        status, headers, body = await request(port, "GET", "/orders/42")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="bastion"'
        assert json.loads(body)["status"] == 401

        forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."
        status, headers, _ = await request(port, "GET", "/orders/42", {"Authorization": f"Bearer {forged}"})
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]

        _, _, bob = await request(idp_port, "GET", "/token?user=bob")
        status, headers, _ = await request(port, "POST", "/orders/", {
            "Authorization": f"Bearer {bob.decode().strip()}", "Content-Type": "application/json"}, b'{"item": 1}')
        assert status == 403 and 'error="insufficient_scope", scope="orders:write"' in headers["www-authenticate"]
        # the purchase flow (API6): alice may create orders, but only after browsing the catalog
        order = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        assert (await request(port, "POST", "/orders/", order, b'{"item": 1}'))[0] == 403
        assert (await request(port, "GET", "/catalog/products", {"Authorization": f"Bearer {token}"}))[0] == 200
        status, _, _ = await request(port, "POST", "/orders/", order, b'{"item": 1}')
        assert status == 200  # alice has orders:write, and browsed first
        events = ""
        for _ in range(50):  # the file sink writes in the background
            events = (info["config"].parent / "audit.jsonl").read_text()
            if "flow_order" in events:
                break
            await asyncio.sleep(0.05)
        assert "flow:purchase/orders/create-order/flows.order" in events and "flow_order" in events

        assert (await request(port, "GET", "/admin/secrets"))[0] == 404
        assert (await request(port, "GET", "/catalog/status"))[0] == 200  # EXC-DEMO-1
        assert (await request(port, "GET", "/catalog/products"))[0] == 401  # same API, no exception

        assert explain(str(info["config"]), "catalog/status") == 0
        assert "exception:EXC-DEMO-1" in capsys.readouterr().out

        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        attack = b'{"item": 1, "note": "1\' UNION SELECT password FROM users--"}'
        status, _, body = await request(port, "POST", "/orders/", auth, attack)
        assert status == 400 and json.loads(body)["status"] == 400  # the CRS, at paranoia 1
        assert explain(str(info["config"]), "orders/create-order") == 0
        assert "inspection: crs: OWASP_CRS/3.3.4" in capsys.readouterr().out

        # the orders API has two targets; with the second process stopped, requests keep succeeding
        auth = {"Authorization": f"Bearer {token}"}
        served = [json.loads((await request(port, "GET", "/orders/42", auth))[2])["instance"] for _ in range(4)]
        assert set(served) == {"orders-a", "orders-b"}
        second = info["second_target"]
        second.kill()
        await second.wait()
        answers = [await request(port, "GET", "/orders/42", auth) for _ in range(6)]
        assert [(status, json.loads(body)["instance"]) for status, _, body in answers] == [(200, "orders-a")] * 6
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_printed_steps_work_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command the demo prints, run as printed (bash, curl, and `bastion` from the PATH line it prints)."""
    port, idp_port, up_port, admin_port = free_port(), free_port(), free_port(), free_port()
    ready, stop, info = asyncio.Event(), asyncio.Event(), {}
    task = asyncio.create_task(run_demo(port, idp_port=idp_port, upstream_port=up_port, admin_port=admin_port,
                                        ready=ready, stop=stop, info=info))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        printed = capsys.readouterr().out
        path_line = next(line.strip() for line in printed.splitlines() if line.strip().startswith("export PATH="))
        steps = printed.split("Try:", 1)[1].split("Ctrl-C", 1)[0]
        commands = [line.strip() for line in steps.splitlines() if line.strip() and not line.strip().startswith("#")]
        script = "\n".join([path_line, "cd /", *(f"echo '>>> {i}'; {c}" for i, c in enumerate(commands))])
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env["PATH"] = "/usr/bin:/bin"  # only what the printed line adds can find `bastion`
        proc = await asyncio.create_subprocess_exec("bash", "-c", script, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        outputs = dict(part.split("\n", 1) if "\n" in part else (part, "") for part in text.split(">>> ")[1:])
        by_command = {commands[int(k)]: v for k, v in outputs.items()}
        status = {c: v.split(" ", 2)[1] for c, v in by_command.items() if v.startswith("HTTP/1.1 ")}
        assert sorted(status.values()) == ["400", "401", "401", "401", "401", "403", "403", "404"]  # 400: the CRS
        flow = [c for c in commands if "/orders/ -X POST" in c and "$TOKEN" in c]  # 5b: order before browsing
        assert status[flow[0]] == "403" and by_command[flow[1]].strip()  # after browsing: the order goes through
        assert json.loads(by_command[commands[1]])["headers"]["x-bastion-subject"] == "alice"  # verified
        assert "exception:EXC-DEMO-1" in text and "command not found" not in err.decode()
        assert "Bastion posture report" in text or "baseline coverage" in text.lower()
        expired = next(v for c, v in by_command.items() if "$EXPIRED" in c)
        other = next(v for c, v in by_command.items() if "$OTHER" in c)
        assert 'error="invalid_token"' in expired and 'error="invalid_token"' in other
        probed = next(v for c, v in by_command.items() if c.startswith("bastion probe"))
        # its identity: a key registered for minutes through the admin API, none on disk
        assert " 0 failed" in probed and "registered a short-lived probe credential" in err.decode()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
