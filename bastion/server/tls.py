"""The server side of TLS: one `ssl.SSLContext` per listener, built from its `tls:` settings.

What `ssl` cannot set (TLS 1.3 suites; more than one key-exchange group) is listed in
bastion/stages/transport/config.py and docs/transport.md.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from bastion.config.secrets import load_cert_chain
from bastion.stages.transport.config import ALPN_PROTOCOLS, TLS_VERSIONS


def listener_ssl(listener: Any, base: Path) -> ssl.SSLContext | None:
    """The listener's TLS context (None for plaintext): its version floor, suites, group, tickets and ALPN."""
    tls = listener.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.set_ciphers(":".join(tls.ciphers))  # TLS 1.2 only: the TLS 1.3 suites are OpenSSL's AEAD defaults
    if tls.groups:
        context.set_ecdh_curve(tls.groups[0])  # SSL_CTX_set1_groups with this one group, for 1.2 and 1.3
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not tls.session_tickets:
        # TLS 1.3 resumes only with tickets: issue none. TLS 1.2 still resumes by session id (Python's ssl
        # cannot turn the server cache off), so "no resumption" also needs min_version 1.3 (listeners.py).
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    alpn = tls.alpn if tls.alpn is not None else (list(ALPN_PROTOCOLS) if getattr(listener, "http2", False) else [])
    if alpn:
        context.set_alpn_protocols(alpn)  # RFC 7301; dispatch hands "h2" to HTTP/2 (RFC 9113 §3.2)
    load_cert_chain(context, resolve_path(base, tls.cert), tls.key, base)  # the key: a path or {env:}/{file:}
    if tls.client_ca is not None and tls.client_cert != "none":
        context.load_verify_locations(resolve_path(base, tls.client_ca))
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return context


def resolve_path(base: Path, path: Path) -> str:
    """A config path: absolute as written, else relative to the config file's directory."""
    return str(path if path.is_absolute() else base / path)
