"""`validate`: a class, API or route demanding more TLS than a listener offers is an error at its field."""

from __future__ import annotations

import textwrap

import pytest

from bastion.compile import compile_config
from bastion.config.loader import ConfigError, load_config

CONFIG = """
version: 1
gateway:
  listeners:
    - port: 0
      tls: {cert: gw.pem, key: gw.key, min_version: "1.3", groups: [X25519], session_tickets: false}
    - port: 0
      tls: {cert: gw.pem, key: gw.key{listener}}
classes:
  internal:
    identity: {required: false}
    transport: {CLASS}
apis:
  - name: inside
    owner: a@example.com
    class: internal
    upstream: http://127.0.0.1:9000
    policy: {API}
    routes: [{name: r, path: /x, methods: [GET]}]
"""


def _diagnostics(tmp_path, listener: str, klass: str, api: str = "") -> list[str]:
    text = CONFIG.replace("{listener}", listener).replace("CLASS", klass).replace("API", api)
    path = tmp_path / "bastion.yaml"
    path.write_text(textwrap.dedent(text))
    try:
        compile_config(load_config(path), build_stages=False)
    except ConfigError as exc:
        return [f"{d.line}:{d.field}" for d in exc.diagnostics]
    return []


@pytest.mark.parametrize(("listener", "klass", "api", "errors"), [
    # the second listener is the default one: TLS 1.2, six AEAD suites, OpenSSL's groups, tickets
    ("", "", "", []),
    ("", 'min_tls: "1.3"', "", ["12:classes.internal.transport.min_tls"]),
    (', min_version: "1.3"', 'min_tls: "1.3"', "", []),
    ("", "ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384]", "", ["12:classes.internal.transport.ciphers"]),
    (", ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384]", "ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384]", "", []),
    (', min_version: "1.3"', "ciphers: [ECDHE-ECDSA-AES256-GCM-SHA384]", "", []),  # no 1.2, no 1.2 suites
    ("", "groups: [X25519]", "", ["12:classes.internal.transport.groups"]),
    (", groups: [X25519]", "groups: [X25519]", "", []),
    ("", "session_resumption: false", "", ["12:classes.internal.transport.session_resumption"]),
    (", session_tickets: false", "session_resumption: false", "", ["12:classes.internal.transport.session_resumption"]),
    (', session_tickets: false, min_version: "1.3"', "session_resumption: false", "", []),
    # an API tightening its class is held to the same rule, at its own line
    ("", "", 'transport: {min_tls: "1.3"}', ["18:apis[0].policy.transport.min_tls"]),
    # revocation without issuers to trust could only ever refuse
    ("", "mtls: required, revocation: soft", "", ["12:classes.internal.transport.revocation"]),
])
def test_a_demand_stricter_than_a_listener_fails_validate_at_its_line(tmp_path, listener, klass, api, errors):
    assert _diagnostics(tmp_path, listener, klass, api) == errors


def test_alpn_cannot_promise_http2_on_a_listener_without_it(tmp_path):
    (tmp_path / "bastion.yaml").write_text(textwrap.dedent("""\
        version: 1
        gateway:
          listeners:
            - port: 0
              http2: false
              tls: {cert: gw.pem, key: gw.key, alpn: [h2, http/1.1]}
        classes: {internal: {identity: {required: false}}}
        """))
    with pytest.raises(ConfigError) as info:
        compile_config(load_config(tmp_path / "bastion.yaml"), build_stages=False)
    assert [(d.line, d.field) for d in info.value.diagnostics] == [(6, "gateway.listeners[0].tls.alpn")]
