"""Every file a config refers to, checked before a (re)load is served: present, readable, and parseable as what
its field expects. A live reload whose certificate, key, CA bundle, JWKS or OpenAPI file is missing or broken is
refused with the `file:line` of the reference, and the previous config keeps serving.

Which check a file gets follows from the field that names it (`_KINDS`); any other file is checked for existence
only (`bastion.config.files.missing_files`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.config.files import missing_files, referenced_files
from bastion.config.loader import ConfigError, Diagnostic, LoadedConfig, Loc


def _certificate(data: bytes, path: Path) -> None:
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:  # cryptography's own text links its FAQ: the operator needs only the gist
        raise ValueError("no PEM certificate could be read from it") from exc


def _private_key(data: bytes, path: Path) -> None:
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: well formed, its password is the TLS layer's business
        return
    except ValueError as exc:
        raise ValueError("no PEM private key could be read from it") from exc


def _ca_bundle(data: bytes, path: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        raise ValueError(f"no usable CA certificate in it ({exc.reason or exc})") from exc


def _jwks(data: bytes, path: Path) -> None:
    from bastion.stages.identity.jwks import parse_jwks

    parse_jwks(data, allow_symmetric=True)


def _openapi(data: bytes, path: Path) -> None:
    from bastion.openapi.loader import load_openapi

    try:
        load_openapi(path)
    except ConfigError as exc:
        raise ValueError(str(exc.diagnostics[0]) if exc.diagnostics else "not an OpenAPI document") from exc


# the field that names a file -> (what the file must be, its check)
_KINDS: dict[str, tuple[str, Callable[[bytes, Path], None]]] = {
    "cert": ("PEM certificate", _certificate), "client_cert": ("PEM certificate", _certificate),
    "key": ("PEM private key", _private_key), "client_key": ("PEM private key", _private_key),
    "client_ca": ("CA bundle", _ca_bundle), "ca": ("CA bundle", _ca_bundle), "issuers": ("CA bundle", _ca_bundle),
    "jwks_file": ("JWKS", _jwks), "openapi": ("OpenAPI document", _openapi),
}
_MAX_BYTES = 16 * 1024 * 1024  # a referenced file larger than this is not what its field expects


def _field(loc: Loc) -> str:
    """The field that names the file: `key` for `...key.file` (a secret by reference), `issuers` for `issuers[0]`."""
    names = [part for part in loc if isinstance(part, str)]
    if names and names[-1] == "file" and len(names) > 1:
        return names[-2]
    return names[-1] if names else ""


def broken_files(loaded: LoadedConfig) -> list[Diagnostic]:
    """An error at the reference's `file:line` for each file that is missing, unreadable, or not what its field
    expects (a certificate that is not PEM, a JWKS that is not JSON, ...)."""
    out = missing_files(loaded)
    missing = {d.field for d in out}
    base = loaded.path.parent
    for loc, path in referenced_files(loaded.model):
        kind = _KINDS.get(_field(loc))
        full = path if path.is_absolute() else base / path
        if kind is None or not full.is_file() or loaded.positions.diagnostic(loc, "").field in missing:
            continue
        what, check = kind
        try:
            if full.stat().st_size > _MAX_BYTES:
                raise ValueError(f"larger than {_MAX_BYTES // (1024 * 1024)} MiB")
            check(full.read_bytes(), full)
        except (ValueError, OSError) as exc:
            out.append(loaded.positions.diagnostic(loc, f"{full} is not a usable {what}: {exc}"))
    return out


def check_referenced_files(loaded: LoadedConfig) -> None:
    """Raise ConfigError with every broken referenced file (the reload is refused; the old config serves on)."""
    broken = broken_files(loaded)
    if broken:
        raise ConfigError(broken)
