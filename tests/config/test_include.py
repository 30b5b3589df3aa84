"""A config directory: the root includes the security team's classes and each team's APIs, and says who may
define what; errors keep their file and line; validate, explain, diff and the report work across files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.compile import compile_config
from bastion.config.include import api_sources
from bastion.config.loader import ConfigError, load_config

ROOT = """\
version: 1
include: [classes.yaml, apis/*.yaml]
owners:
  classes.yaml: {sections: [classes, providers, consumers, exceptions]}
  apis/orders.yaml: {apis: [team-orders@example.com]}
  apis/pay*.yaml: {apis: [team-pay@example.com]}
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
classes:
  internal: {identity: {required: false, methods: []}}
"""
CLASSES = """\
classes:
  open:
    identity: {required: false, methods: []}
"""
ORDERS = """\
apis:
  - name: orders
    owner: team-orders@example.com
    class: open
    upstream: http://127.0.0.1:9001
    base_path: /orders
    routes:
      - {name: list, path: /, methods: [GET]}
"""
PAYMENTS = """\
# the payments team's file
apis:
  - name: payments
    owner: team-pay@example.com
    class: internal
    upstream: http://127.0.0.1:9002
    base_path: /payments
    routes:
      - {name: pay, path: /, methods: [POST]}
"""


def tree(tmp_path: Path, **files: str) -> Path:
    contents = {"bastion.yaml": ROOT, "classes.yaml": CLASSES, "apis/orders.yaml": ORDERS,
                "apis/payments.yaml": PAYMENTS}
    contents.update({name.replace("__", "/").replace("_yaml", ".yaml").replace("bastion_d/", "bastion.d/"): text
                     for name, text in files.items()})
    for name, text in contents.items():
        if text is None:
            continue
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def errors(path: Path) -> list[tuple[str, int, str]]:
    with pytest.raises(ConfigError) as info:
        compiled = compile_config(load_config(path))
        if compiled.errors:
            raise ConfigError(compiled.errors)
    return [(str(Path(d.file).relative_to(path)), d.line, d.message) for d in info.value.diagnostics]


def test_a_directory_loads_as_one_config_and_knows_where_each_api_is(tmp_path):
    loaded = load_config(tree(tmp_path))  # `-c dir/` means dir/bastion.yaml
    compiled = compile_config(loaded)
    assert not compiled.errors
    assert sorted(r.info.route_id for r in compiled.routes) == ["orders/list", "payments/pay"]
    assert set(loaded.model.classes) == {"internal", "open"}
    assert api_sources(loaded) == {"orders": "apis/orders.yaml:2", "payments": "apis/payments.yaml:3"}


def test_the_hash_covers_every_file(tmp_path):
    first = load_config(tree(tmp_path)).text_hash
    (tmp_path / "apis" / "orders.yaml").write_text(ORDERS.replace("9001", "9003"))
    assert load_config(tmp_path).text_hash != first


@pytest.mark.parametrize(("files", "expected"), [
    # a team may not define another team's API
    ({"apis__orders_yaml": ORDERS.replace("team-orders@", "team-pay@")},
     ("apis/orders.yaml", 3, "may define APIs owned by team-orders@example.com, not 'team-pay@example.com'")),
    # nor a class (a weak class of its own would lower its baseline)
    ({"apis__orders_yaml": ORDERS + CLASSES}, ("apis/orders.yaml", 9, "may not define `classes`")),
    # a file no entry of `owners` names may define nothing
    ({"apis__extra_yaml": ORDERS.replace("orders", "extra")}, ("apis/extra.yaml", 1, "matches no entry")),
    # one class, two files
    ({"classes_yaml": CLASSES.replace("open", "internal")}, ("classes.yaml", 2, "also at bastion.yaml:10")),
    # validation errors point into the included file
    ({"apis__payments_yaml": PAYMENTS.replace("base_path", "base_pth")}, ("apis/payments.yaml", 7, "unknown field")),
    # and so do compile errors
    ({"apis__payments_yaml": PAYMENTS.replace("class: internal", "class: secret")},
     ("apis/payments.yaml", 5, "unknown class 'secret'")),
    ({"apis__payments_yaml": "apis: [\n  {name: x\n"}, ("apis/payments.yaml", 3, "YAML")),
    ({"apis__payments_yaml": "gateway: {}\n"}, ("apis/payments.yaml", 1, "holds only")),
    ({"bastion_yaml": ROOT.replace("apis/*.yaml]", "apis/*.yaml, teams/*.yaml]")},
     ("bastion.yaml", 2, "no file matches 'teams/*.yaml'")),
])
def test_refusals_point_at_the_file_and_line(tmp_path, files, expected):
    found = errors(tree(tmp_path, **files))
    assert any(f == expected[0] and line == expected[1] and expected[2] in message for f, line, message in found), \
        found


def test_outside_files_are_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "outside.yaml").write_text(CLASSES)
    root = tree(tmp_path / "sub", bastion_yaml=ROOT.replace("apis/*.yaml]", "apis/*.yaml, ../outside.yaml]"))
    found = errors(root)
    assert any("outside" in message for _, _, message in found)


def test_without_owners_every_file_may_define_everything(tmp_path):
    root = tree(tmp_path, bastion_yaml="\n".join(line for line in ROOT.splitlines()
                                                 if not line.startswith(("owners", "  classes.yaml", "  apis/"))))
    assert not compile_config(load_config(root)).errors


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True, text=True, timeout=60)


def test_validate_explain_report_and_diff_work_on_the_directory(tmp_path):
    root = tree(tmp_path / "a")
    result = run("validate", "-c", str(root))
    assert result.returncode == 0 and "2 routes" in result.stdout
    result = run("explain", "-c", str(root), "orders/list")
    assert "defined in: apis/orders.yaml:2" in result.stdout
    report = json.loads(run("report", "-c", str(root), "--format", "json").stdout)
    assert {r["route"]: r["source"] for r in report["routes"]} == {"orders/list": "apis/orders.yaml:2",
                                                                   "payments/pay": "apis/payments.yaml:3"}
    other = tree(tmp_path / "b", apis__payments_yaml=PAYMENTS.replace("class: internal", "class: open"))
    result = run("diff", "-c", str(root), "--against", str(other))
    assert result.returncode == 1 and "payments/pay" in result.stdout
    broken = tree(tmp_path / "c", apis__orders_yaml=ORDERS.replace("team-orders@", "team-pay@"))
    result = run("validate", "-c", str(broken))
    assert result.returncode == 1 and f"{broken / 'apis' / 'orders.yaml'}:3:" in result.stderr



async def test_a_reload_reads_the_included_files_again(tmp_path):
    from bastion.server.app import Runtime
    from tests.helpers import request, upstream_server

    async with upstream_server() as up:
        root = tree(tmp_path, apis__orders_yaml=ORDERS.replace("http://127.0.0.1:9001", f"http://127.0.0.1:{up}"))
        runtime = Runtime(root)  # the directory
        await runtime.start()
        try:
            port = runtime.bound[0][1]
            assert (await request(port, "GET", "/orders"))[0] == 200
            assert (await request(port, "GET", "/orders/new"))[0] == 404
            orders = (root / "apis" / "orders.yaml").read_text()
            (root / "apis" / "orders.yaml").write_text(orders + "      - {name: new, path: /new, methods: [GET]}\n")
            assert (await runtime.reload())[0]
            assert (await request(port, "GET", "/orders/new"))[0] == 200
            (root / "apis" / "orders.yaml").write_text(orders.replace("team-orders@", "team-pay@"))
            ok, message = await runtime.reload()
            assert not ok and "apis/orders.yaml:3" in message  # refused; the running config stays
            assert (await request(port, "GET", "/orders/new"))[0] == 200
        finally:
            await runtime.stop(drain_timeout=0.5)


def test_a_bastion_d_directory_is_included_without_include(tmp_path):
    root = "\n".join(line for line in ROOT.splitlines() if not line.startswith("include"))
    root = root.replace("classes.yaml:", "bastion.d/classes.yaml:").replace("apis/", "bastion.d/apis/")
    tree(tmp_path, bastion_yaml=root, classes_yaml=None, apis__orders_yaml=None, apis__payments_yaml=None,
         bastion_d__classes_yaml=CLASSES, bastion_d__apis__orders_yaml=ORDERS)
    loaded = load_config(tmp_path)
    assert api_sources(loaded) == {"orders": "bastion.d/apis/orders.yaml:2"}
    assert not compile_config(loaded).errors
