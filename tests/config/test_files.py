"""Every file a config names is checked by `validate`, and reported at the line that names it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bastion.config.files import missing_files, referenced_files
from bastion.config.loader import load_config

CONFIG = """
version: 1
gateway:
  listeners:
    - address: 127.0.0.1
      port: 0
      tls: {cert: certs/gw.pem, key: certs/gw.key, client_ca: /nonexistent/ca.pem}
  audit: {sinks: [{type: file, path: logs/audit.jsonl}]}
classes:
  open:
    identity: {required: false}
apis:
  - name: shop
    owner: team@example.com
    class: open
    upstream: http://127.0.0.1:9
    openapi: specs/shop.yaml
"""


def test_missing_files_are_errors_at_their_line(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent(CONFIG))
    loaded = load_config(tmp_path / "bastion.yaml")
    found = {loc[-1] for loc, _ in referenced_files(loaded.model)}
    assert {"cert", "key", "client_ca", "openapi"} <= found and "path" not in found  # the audit file is written
    got = [(d.line, d.field, d.message.split(":")[0]) for d in missing_files(loaded)]
    assert got == [(7, "gateway.listeners[0].tls.cert", "file not found"),
                   (7, "gateway.listeners[0].tls.key", "file not found"),
                   (7, "gateway.listeners[0].tls.client_ca", "file not found"),
                   (17, "apis[0].openapi", "file not found")]
    assert str(tmp_path / "certs" / "gw.pem") in missing_files(loaded)[0].message  # resolved beside the config
    for name in ("certs/gw.pem", "certs/gw.key", "specs/shop.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    assert [d.field for d in missing_files(loaded)] == ["gateway.listeners[0].tls.client_ca"]
