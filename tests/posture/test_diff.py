"""`bastion diff`: effective-policy changes, weakenings first, against a file and against a running gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bastion.cli_posture import dispatch
from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture.diff import compare, effective_policies, text
from tests.posture.conftest import demo_config, dump_doc, load_doc, running_demo
from tests.posture.test_cli import parse
from tests.posture.test_probe import _weaken


def _drift(doc: dict) -> None:
    _weaken(doc)
    doc["apis"][1]["routes"].append({"name": "debug", "path": "/debug", "methods": ["GET"]})
    doc["apis"][1]["routes"][1]["policy"] = {"identity": {"required": False},
                                             "traffic": {"upstream_timeout": "2s"}}


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    approved, _ = demo_config(tmp_path / "a", "https://idp.example.com", "http://127.0.0.1:9")
    doc = load_doc(approved.read_text())
    _drift(doc)
    other = tmp_path / "a" / "other.yaml"
    other.write_text(dump_doc(doc))
    return approved, other


def _policies(path: Path) -> dict:
    return effective_policies(compile_config(load_config(path), build_stages=False))


def test_changes_weakenings_first(tmp_path: Path):
    (tmp_path / "a").mkdir()
    approved, other = _configs(tmp_path)
    changes = compare(_policies(approved), _policies(other))
    got = [(c.kind, c.route, c.control, c.before, c.after) for c in changes]
    assert got == [
        ("weaker", "catalog/list-products", "identity", "enforced", "waived (exception:EXC-WEAK-1)"),
        ("weaker", "orders/create-order", "traffic.max_body_bytes", 65536, 1048576),
        ("weaker", "orders/get-order", "traffic.max_body_bytes", 65536, 1048576),
        ("weaker", "orders/list-orders", "traffic.max_body_bytes", 65536, 1048576),
        ("weaker", "<exceptions>", "exceptions[EXC-WEAK-1]", None, "present"),  # new exceptions: trust granted
        ("weaker", "<exceptions>", "exceptions[EXC-WEAK-2]", None, "present"),
        ("added", "catalog/debug", "route", None, "/catalog/debug"),
        ("stricter", "catalog/status", "traffic.upstream_timeout", 30.0, 2.0),
    ]
    assert changes[1].source_after == "exception:EXC-WEAK-2"
    assert compare(_policies(approved), _policies(approved)) == []
    assert compare(_policies(other), _policies(approved))[0].kind == "weaker"  # removed route is listed last
    assert compare(_policies(other), _policies(approved))[-1].kind == "stricter"
    rendered = text(changes, _policies(approved), _policies(other), "other.yaml")
    assert "WEAKER  orders/get-order  traffic.max_body_bytes: 65536 -> 1048576" in rendered


def test_diff_cli_against_a_file(tmp_path: Path, capsys):
    (tmp_path / "a").mkdir()
    approved, other = _configs(tmp_path)
    assert dispatch(parse("diff", "-c", str(approved), "--against", str(approved))) == 0
    assert "no effective-policy change" in capsys.readouterr().out
    assert dispatch(parse("diff", "-c", str(approved), "--against", str(other), "--json")) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["weakenings"] == 7 and doc["changes"][0]["kind"] == "weaker"


async def _serve_policies(doc: dict, token: str) -> asyncio.Server:
    """What the lead mounts at GET /policies on the admin listener, behind the admin bearer token."""
    body = json.dumps(doc).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        ok = f"authorization: bearer {token}" in head.lower()
        status, payload = (b"200 OK", body) if ok else (b"401 Unauthorized", b"{}")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(payload)).encode() + b"\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_diff_cli_against_a_running_gateway(tmp_path: Path, capsys, monkeypatch):
    async with running_demo(tmp_path / "weak", _drift) as weak:
        assert weak.runtime.gateway is not None
        served = await _serve_policies(effective_policies(weak.runtime.gateway.compiled), "s3cret")
        admin = f"http://127.0.0.1:{served.sockets[0].getsockname()[1]}"
        try:
            doc = load_doc(weak.config.read_text())
            doc["apis"][1]["routes"].pop()
            doc["apis"][1]["routes"][1]["policy"] = {"identity": {"required": False}}
            doc["apis"][0].pop("policy")
            doc["exceptions"] = doc["exceptions"][:1]
            approved = weak.config.parent / "approved.yaml"
            approved.write_text(dump_doc(doc))
            assert await asyncio.to_thread(dispatch, parse("diff", "-c", str(approved), "--admin", admin)) == 2
            assert "answered 401" in capsys.readouterr().err
            monkeypatch.setenv("BASTION_ADMIN_TOKEN", "s3cret")
            assert await asyncio.to_thread(dispatch, parse("diff", "-c", str(approved), "--admin", admin)) == 1
            out = capsys.readouterr().out
            assert f"vs running {admin}" in out
            assert out.splitlines()[1] == ("  WEAKER  catalog/list-products  identity: enforced -> waived "
                                           "(exception:EXC-WEAK-1)")
            assert "WEAKER  catalog/debug: route added" in out
        finally:
            served.close()
