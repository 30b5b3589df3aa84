"""The configs the documentation shows are valid, and the README shows the example file as it is."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "docs" / "examples" / "bastion.yaml").read_text()


@pytest.mark.parametrize("when", ["2026-12-07T00:00:00Z", "2026-12-31T00:00:00Z", "2029-10-31T23:59:59Z",
                                  "2029-11-01T00:00:00Z", "2041-06-01T00:00:00Z"])
def test_example_config_is_valid_whatever_the_date(when: str) -> None:
    """The README's example validates on any day: before its exception ends, at that instant and years later."""
    now = datetime.fromisoformat(when).timestamp()
    compiled = compile_config(load_config(ROOT / "docs" / "examples" / "bastion.yaml"), now=now)
    assert {r.info.route for r in compiled.routes} == {"listOrders", "createOrder", "getOrder", "health"}
    expired = any("EXC-2026-014 expired" in str(w) for w in compiled.warnings)
    assert expired == (now >= datetime.fromisoformat("2029-11-01T00:00:00Z").timestamp())


_EXPIRY = re.compile(r"(?:expires|expiry|not_after|valid_until)\W{1,4}(\d{4}-\d{2}-\d{2}(?:T[0-9:]+Z?)?)", re.I)


def expiring_dates(text: str, now: datetime, within: timedelta) -> list[str]:
    """Absolute expiry dates in `text` that fall before `now + within`: the example stops meaning what it says."""
    found = []
    for match in _EXPIRY.finditer(text):
        when = datetime.fromisoformat(match.group(1).replace("Z", "") + ("" if "T" in match.group(1) else "T00:00"))
        if when.replace(tzinfo=UTC) < now + within:
            found.append(match.group(1))
    return found


@pytest.mark.parametrize(("text", "now", "expected"), [
    ("expires: 2026-12-31T00:00:00Z", "2026-12-07", ["2026-12-31T00:00:00Z"]),  # the README's old time bomb
    ("expires: 2026-12-31T00:00:00Z", "2025-12-30", []),  # a year and a day ahead: fine
    ("{id: k1, expires: 2027-03-01}", "2026-12-07", ["2027-03-01"]),
    ("created: 2020-01-01T00:00:00Z", "2026-12-07", []),  # not an expiry
    ("expires: 2020-01-01T00:00:00Z", "2026-12-07", ["2020-01-01T00:00:00Z"]),  # already expired
])
def test_expiring_dates_finds_what_will_expire_within_the_window(text: str, now: str, expected: list[str]) -> None:
    clock = datetime.fromisoformat(now).replace(tzinfo=UTC)
    assert expiring_dates(text, clock, timedelta(days=365)) == expected


def test_no_doc_or_example_expires_within_a_year() -> None:
    """Early warning a year ahead, not a red CI on the day: dates in docs and examples stay far from now.

    This is the one test that reads the real clock, on purpose: its job is to look at today's date.
    """
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.yaml")),
             *sorted((ROOT / "bastion" / "demo").glob("*.yaml"))]
    now = datetime.now(UTC)
    stale = {str(p.relative_to(ROOT)): d for p in files if (d := expiring_dates(p.read_text(), now, timedelta(days=365)))}
    assert stale == {}, "move these dates at least a year ahead (or compute them relative to now)"


def test_every_yaml_example_in_the_docs_parses() -> None:
    """Each fenced YAML block in docs/*.md is valid YAML (configs fragments are checked by their layer tests)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            yaml.load(block)


def test_the_example_passes_validate_once_its_files_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bastion validate` on the README example: it names TLS files, which must exist and be what their fields
    say (a certificate, a key, a CA bundle: placeholders are refused at their line)."""
    from bastion.commands import validate

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text((ROOT / "docs" / "examples" / "specs" / "orders.yaml").read_text())
    (tmp_path / "bastion.yaml").write_text((ROOT / "docs" / "examples" / "bastion.yaml").read_text())
    assert validate(str(tmp_path / "bastion.yaml")) == 1
    assert "bastion.yaml:8:13: gateway.listeners[1].tls.cert: file not found" in capsys.readouterr().err
    (tmp_path / "certs").mkdir()
    for name in ("gw.pem", "gw.key", "partners-ca.pem"):
        (tmp_path / "certs" / name).write_text("placeholder\n")
    assert validate(str(tmp_path / "bastion.yaml")) == 1
    assert "gateway.listeners[1].tls.cert: " in capsys.readouterr().err
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "certs" / "partners-ca.pem")
    server = ca.issue_cert("gateway.example.com")
    server.cert_chain_pems[0].write_to_path(tmp_path / "certs" / "gw.pem")
    server.private_key_pem.write_to_path(tmp_path / "certs" / "gw.key")
    assert validate(str(tmp_path / "bastion.yaml")) == 0, capsys.readouterr().err


def test_pool_example_is_valid():
    compiled = compile_config(load_config(ROOT / "docs" / "examples" / "pool.yaml"))
    assert not compiled.errors
    [pool] = {r.upstream.pool for r in compiled.routes}
    assert [t.weight for t in pool.targets] == [1, 2]


def test_config_directory_example_is_valid():
    from bastion.config.include import api_sources

    loaded = load_config(ROOT / "docs" / "examples" / "config-dir")
    compiled = compile_config(loaded)
    assert not compiled.errors and len(compiled.routes) == 3
    assert api_sources(loaded)["orders"] == "apis/orders.yaml:3"
