"""Audit sinks: where serialised events go. A sink delivers a batch of JSON lines or raises `SinkError`;
retries, spooling and ordering belong to the channel in front of it (`bastion.audit.delivery`)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Protocol

import orjson

from bastion.audit.config import AuditSinkConfig, TlsClientConfig
from bastion.audit.events import OCSF_VERSION, PRODUCT
from bastion.config.secrets import load_cert_chain

_OCSF_UID = b'"metadata":' + orjson.dumps({"version": OCSF_VERSION, "product": PRODUCT})[:-1] + b',"uid":"'
"""How every OCSF event Bastion writes begins its `metadata` (version and product are constants)."""


def event_id(line: bytes) -> str | None:
    """The unique id of one serialised event: OCSF `metadata.uid`, or ECS `event.id` (None if neither).

    Every batch a file sink writes passes here, so Bastion's own OCSF lines are read without parsing ~2 KB of
    JSON: when `"metadata":{...,"uid":"` follows a comma with no object or array opened before it, it is the
    top-level key (a quote inside a string is escaped, so that text cannot sit inside one, and a string cannot
    end right before `metadata"`), and the uid runs to the next quote. Anything else is parsed."""
    at = line.find(_OCSF_UID)
    if at > 1 and line[at - 1] == _COMMA and line[0] == _BRACE and line.find(b"{", 1, at) < 0 \
            and line.find(b"[", 0, at) < 0:
        start = at + len(_OCSF_UID)
        end = line.find(b'"', start)
        found = line[start:end] if end > 0 else b"\\"
        if found.isascii() and b"\\" not in found:
            return found.decode("ascii")
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    meta = doc.get("metadata") if "metadata" in doc else doc.get("event")
    uid = meta.get("uid", meta.get("id")) if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) else None


_COMMA, _BRACE = ord(","), ord("{")


class SinkError(Exception):
    """A batch was not delivered (the receiver is down, slow, or refused it): the channel retries it later."""


class Sink(Protocol):
    """One destination. `deliver` either takes the whole batch or raises SinkError."""

    name: str

    async def deliver(self, lines: list[bytes]) -> None: ...

    async def close(self) -> None: ...


def client_ssl(tls: TlsClientConfig | None, base_dir: Path) -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context, with the configured CA and client certificate."""
    def resolve(path: Path) -> str:
        return str(path if path.is_absolute() else base_dir / path)

    context = ssl.create_default_context(cafile=resolve(tls.ca) if tls and tls.ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None and tls.cert is not None and tls.key is not None:
        load_cert_chain(context, resolve(tls.cert), tls.key, base_dir)  # the key: a path or a secret reference
    return context


def build_sink(config: AuditSinkConfig, name: str, base_dir: Path) -> Sink:
    """The sink for one `gateway.audit.sinks` entry. Raises ValueError for a missing token."""
    if config.type in ("file", "stdout"):
        from bastion.audit.sinks.file import FileSink, StdoutSink

        if config.type == "stdout":
            return StdoutSink(name)
        assert config.path is not None  # the model requires it
        path = config.path if config.path.is_absolute() else base_dir / config.path
        # a replay (the spool's head after a crash between the write and the cursor) is one batch at most;
        # the rest is margin for other workers' events interleaved in the tail a restarted worker reads
        return FileSink(name, path, config.max_bytes, config.backups, remember=max(4096, 2 * config.batch_events))
    if config.type == "syslog":
        from bastion.audit.sinks.syslog import SyslogSink

        assert config.host is not None
        context = client_ssl(config.tls, base_dir) if config.tls is not None else None
        port = config.port or (6514 if context else 514)
        return SyslogSink(name, config.host, port, context=context,
                          server_name=config.tls.server_name if config.tls else None, app_name=config.app_name,
                          facility=config.facility, timeout=config.timeout, resend_window=config.resend_window)
    from bastion.audit.sinks.http import HttpSink

    assert config.url is not None
    token = None
    if config.token is not None:  # loaded with the config
        token = config.token.value()
    elif config.token_env:
        token = os.environ.get(config.token_env)
        if not token:
            raise ValueError(f"audit sink {name}: environment variable {config.token_env} is not set")
    elif config.token_file is not None:
        path = config.token_file if config.token_file.is_absolute() else base_dir / config.token_file
        token = path.read_text().strip()
    context = client_ssl(config.tls, base_dir) if config.url.startswith("https:") else None
    return HttpSink(name, config.url, token=token, scheme=config.auth_scheme, body=config.body,
                    sourcetype=config.format, timeout=config.timeout, ssl_context=context)
