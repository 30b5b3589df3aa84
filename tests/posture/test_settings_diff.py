"""`bastion diff` beyond route policies: every section of the config, each change classified, table-driven."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.compile import compile_config
from bastion.config.loader import load_config
from bastion.posture.diff import compare, effective_policies, text
from bastion.posture.settings_diff import classify
from tests.posture.conftest import dump_doc, load_doc

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "bastion.yaml"
NOW = datetime(2027, 1, 10, tzinfo=UTC).timestamp()
KEY = {"type": "api_key", "id": "k1a2b3c4", "key_sha256": "ab" * 32}
Doc = dict[str, Any]


def _provider(doc: Doc) -> None:
    doc["providers"]["jwt"].append({"name": "other", "issuer": "https://evil.example.net", "audiences": ["api://orders"],
                                    "algorithms": ["ES256"], "jwks_file": "jwks.json"})


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return mutate


def _append(path: str, value: Any) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for part in path.split("/"):
            node = node[int(part)] if part.isdigit() else node.setdefault(part, [])
        node.append(value)
    return mutate


def _sinks(doc: Doc) -> None:
    doc["gateway"]["audit"]["sinks"] = []


CASES: list[tuple[str, Callable[[Doc], None], str, str, str]] = [
    # (name, mutation, section, path, kind)
    ("new trusted issuer", _provider, "<providers>", "providers.jwt[other]", "weaker"),
    ("issuer changed", _set("providers/jwt/0/issuer", "https://idp2.example.com"), "<providers>",
     "providers.jwt[corp].issuer", "weaker"),
    ("audience added", _set("providers/jwt/0/audiences", ["api://orders", "api://all"]), "<providers>",
     "providers.jwt[corp].audiences", "weaker"),
    ("algorithm dropped", _set("providers/jwt/0/algorithms", ["ES256"]), "<providers>",
     "providers.jwt[corp].algorithms", "stricter"),
    ("new consumer", _append("consumers", {"name": "intruder", "credentials": [KEY]}), "<consumers>",
     "consumers[intruder]", "weaker"),
    ("new key", _append("consumers/0/credentials", KEY), "<consumers>",
     "consumers[acme-billing].credentials[k1a2b3c4]", "weaker"),
    ("network allow-list started", _set("consumers/0/networks", ["10.0.0.0/8"]), "<consumers>",
     "consumers[acme-billing].networks", "stricter"),
    ("new trusted proxy CIDR", _set("gateway/trusted_proxies", ["10.0.0.0/8", "0.0.0.0/0"]), "<gateway>",
     "gateway.trusted_proxies", "weaker"),
    ("header timeout raised", _set("gateway/limits/header_timeout", "60s"), "<gateway>",
     "gateway.limits.header_timeout", "weaker"),
    ("header timeout lowered", _set("gateway/limits/header_timeout", "5s"), "<gateway>",
     "gateway.limits.header_timeout", "stricter"),
    ("identity header no longer stripped", _set("gateway/identity_headers", ["x-bastion-*"]), "<gateway>",
     "gateway.identity_headers", "weaker"),
    ("admin port moved", _set("gateway/admin/port", 9902), "<gateway>", "gateway.admin.port", "changed"),
    ("class body limit raised", _set("classes/partner/traffic/max_body_bytes", "1MiB"), "<classes>",
     "classes.partner.traffic.max_body_bytes", "weaker"),
    ("class needs mTLS no more", _set("classes/partner/transport/mtls", "optional"), "<classes>",
     "classes.partner.transport.mtls", "weaker"),
    ("API host added", _set("apis/0/hosts", ["api.example.com", "old.example.com"]), "<apis>",
     "apis[orders].hosts", "weaker"),
    ("API owner changed", _set("apis/0/owner", "someone@example.com"), "<apis>", "apis[orders].owner", "changed"),
    ("detection switched off", _set("gateway/audit/detections", {"credential_stuffing": {"enabled": False}}),
     "<detection>", "gateway.audit.detections.credential_stuffing.enabled", "weaker"),
    ("detection threshold raised", _set("gateway/audit/detections", {"enumeration": {"threshold": 300}}),
     "<detection>", "gateway.audit.detections.enumeration.threshold", "weaker"),
    ("audit sink removed", _sinks, "<audit>", "gateway.audit.sinks[/var/log/bastion/audit.jsonl]", "weaker"),
    ("new exception", _append("exceptions", {
        "id": "EXC-NEW", "target": {"api": "orders"}, "controls": ["traffic.rate_limits"], "owner": "a@example.com",
        "reason": "r", "evidence": "https://t.example.com/1", "created": "2027-01-01T00:00:00Z",
        "expires": "2027-02-01T00:00:00Z"}), "<exceptions>", "exceptions[EXC-NEW]", "weaker"),
    ("exception extended", _set("exceptions/0/expires", "2029-12-01T00:00:00Z"), "<exceptions>",
     "exceptions[EXC-2026-014].expires", "weaker"),
    ("exception shortened", _set("exceptions/0/expires", "2027-06-01T00:00:00Z"), "<exceptions>",
     "exceptions[EXC-2026-014].expires", "stricter"),
]


def _policies(path: Path) -> dict[str, Any]:
    return effective_policies(compile_config(load_config(path), now=NOW, build_stages=False))


@pytest.mark.parametrize(("name", "mutate", "section", "path", "kind"), CASES, ids=[c[0] for c in CASES])
def test_every_section_is_compared_and_classified(tmp_path: Path, name: str, mutate: Callable[[Doc], None],
                                                  section: str, path: str, kind: str) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text((EXAMPLE.parent / "specs" / "orders.yaml").read_text())
    approved = tmp_path / "approved.yaml"
    approved.write_text(EXAMPLE.read_text())
    doc = load_doc(EXAMPLE.read_text())
    mutate(doc)
    other = tmp_path / "other.yaml"
    other.write_text(dump_doc(doc))
    changes = compare(_policies(approved), _policies(other))
    found = [(c.route, c.control, c.kind) for c in changes if c.route.startswith("<")]
    assert (section, path, kind) in found
    if kind == "weaker":
        assert changes[0].kind in ("weaker", "added")  # weakenings first
        assert "no effective-policy change" not in text(changes, _policies(approved), _policies(other), "x")


def test_sections_covered() -> None:
    assert {c[2] for c in CASES} == {"<providers>", "<consumers>", "<gateway>", "<classes>", "<apis>",
                                     "<detection>", "<audit>", "<exceptions>"}


def test_secrets_are_compared_by_digest_never_shown() -> None:
    from bastion.posture.settings_diff import settings

    class Cfg:
        def model_dump(self, mode: str) -> dict[str, Any]:
            return {"gateway": {}, "classes": {}, "consumers": [], "apis": [], "exceptions": [],
                    "providers": {"introspection": [{"name": "i", "client_secret": "hunter2"}]}}

    doc = settings(Cfg())
    secret = doc["providers"]["introspection"][0]["client_secret"]
    assert secret.startswith("sha256:") and "hunter2" not in str(doc)
    assert classify("providers.introspection[i].client_secret", secret, "sha256:000") == "changed"
