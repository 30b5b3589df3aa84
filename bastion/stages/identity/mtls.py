"""Client certificates: what a verified certificate says (subject, SANs, SHA-256 thumbprint) and RFC 8705
certificate-bound tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The parts of a client certificate a consumer may be mapped by."""

    x5t_s256: str  # base64url SHA-256 of the DER (RFC 8705 §3.1)
    subject: str  # RFC 4514 string, e.g. "CN=billing,O=Example"
    sans: tuple[str, ...]


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 `x5t#S256`: base64url (no padding) of the SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def normalize_thumbprint(value: str) -> str:
    """Accept a base64url thumbprint or a hex one (with or without colons) and return base64url."""
    compact = value.replace(":", "").strip()
    if len(compact) == 64 and all(c in "0123456789abcdefABCDEF" for c in compact):
        return base64.urlsafe_b64encode(bytes.fromhex(compact)).rstrip(b"=").decode("ascii")
    return compact.rstrip("=")


def bound_to(cnf_x5t: str, der: bytes | None) -> bool:
    """RFC 8705 §3: the token is usable only over a connection with the client certificate it names."""
    if der is None:
        return False
    return hmac.compare_digest(normalize_thumbprint(cnf_x5t).encode(), thumbprint(der).encode())


class CertParser:
    """Parses each DER certificate once and remembers the result (bounded LRU)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max_entries
        self._cache: OrderedDict[bytes, CertInfo] = OrderedDict()

    def parse(self, der: bytes) -> CertInfo:
        key = hashlib.sha256(der).digest()
        info = self._cache.get(key)
        if info is not None:
            self._cache.move_to_end(key)
            return info
        cert = x509.load_der_x509_certificate(der)
        sans: list[str] = []
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            ext = None
        if ext is not None:
            for name in ext:
                sans.append(str(name.value))
        info = CertInfo(thumbprint(der), cert.subject.rfc4514_string(), tuple(sans))
        self._cache[key] = info
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return info
