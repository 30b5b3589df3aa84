"""The posture verbs through argparse, as `bastion` wires them (add_verbs + dispatch)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from bastion.cli_posture import add_verbs, dispatch
from tests.posture.conftest import Demo


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bastion")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("version")
    add_verbs(verbs)
    return parser.parse_args(argv)


def test_dispatch_ignores_other_verbs():
    assert dispatch(parse("version")) is None


def test_new_key_writes_a_key_pair(tmp_path: Path, capsys):
    assert dispatch(parse("probe", "--new-key", str(tmp_path / "keys"))) == 0
    assert json.loads((tmp_path / "keys" / "probe-jwks.json").read_text())["keys"][0]["kty"] == "EC"
    assert (tmp_path / "keys" / "probe-key.jwk").stat().st_mode & 0o077 == 0
    assert "jwks_file" in capsys.readouterr().out


def test_probe_usage_errors():
    assert dispatch(parse("probe")) == 2
    assert dispatch(parse("probe", "-c", "x.yaml", "--probe-key", "k.jwk")) == 2


async def test_probe_cli_against_the_demo(demo: Demo, tmp_path: Path, capsys):
    out = tmp_path / "probe.json"
    args = parse("probe", "-c", str(demo.config), "--target", demo.target, "--probe-provider",
                 demo.identity.provider, "--probe-key", str(demo.identity.key), "-o", str(out))
    assert await asyncio.to_thread(dispatch, args) == 0
    printed = capsys.readouterr().out
    assert "0 failed" in printed and "orders/get-order" in printed
    assert json.loads(out.read_text())["summary"]["fail"] == 0


async def test_probe_publish_puts_the_run_on_the_dashboard(tmp_path: Path) -> None:
    from tests.helpers import BASIC, free_port, request, running_gateway

    admin_port = free_port()
    config = BASIC.replace("admin: {address: 127.0.0.1, port: 0}", f"admin: {{address: 127.0.0.1, port: {admin_port}}}")
    async with running_gateway(tmp_path, config) as gw:
        target = f"http://127.0.0.1:{gw.bound[0][1]}"
        code = await asyncio.to_thread(dispatch, parse("probe", "-c", str(tmp_path / "bastion.yaml"), "--target",
                                                       target, "--publish"))
        assert code in (0, 1)  # the run's own verdict; what matters here is that it was published
        report = json.loads((await request(admin_port, "GET", "/report"))[2])
        assert report["probe"]["target"] == target
        assert (report["kpis"]["probe_failures"] > 0) == bool(code)
        assert all(r["probe"] is not None and r["probe"]["pass"] + r["probe"]["fail"] > 0 for r in report["routes"])
