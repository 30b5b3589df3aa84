"""Certificate revocation lists from files the operator provides, reloaded when they change.

A CRL counts only if one of the configured issuers signed it (RFC 5280 §6.3.3 (f)); past its `next_update` plus
the grace it is stale and answers nothing, so a class with `revocation: hard` fails closed rather than trust an
old list. A file that cannot be read or verified keeps the previous list of that file (and is reported).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bastion.stages.transport.status import CertStatus


@dataclass(frozen=True, slots=True)
class _Loaded:
    """One file's parsed list and the stat it was read at."""

    stamp: tuple[float, int]
    crl: x509.CertificateRevocationList | None
    error: str = ""  # why this version of the file was not taken (the previous list is kept)


class CrlStore:
    """The CRLs of several files, by issuer; each file re-read when its mtime or size changes."""

    def __init__(self, paths: list[Path], issuers: list[x509.Certificate], *, grace: float,
                 reload_interval: float, wall_clock: Callable[[], float],
                 monotonic: Callable[[], float]) -> None:
        self._paths = paths
        self._issuers = issuers
        self._grace = grace
        self._interval = reload_interval
        self._wall = wall_clock
        self._mono = monotonic
        self._files: dict[Path, _Loaded] = {}
        self._by_issuer: dict[str, x509.CertificateRevocationList] = {}
        self._checked = -float("inf")
        self.errors: list[str] = []  # the last reload's problems, for the audit event
        self.reload()

    def reload(self) -> None:
        """Re-read every file whose stat changed; rebuild the issuer index."""
        self._checked = self._mono()
        errors: list[str] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror}")
                continue
            stamp = (st.st_mtime, st.st_size)
            old = self._files.get(path)
            if old is not None and old.stamp == stamp:
                continue
            crl: x509.CertificateRevocationList | None
            error = ""
            try:
                crl = self._verified(path.read_bytes())
            except ValueError as exc:
                error = f"{path}: {exc}"
                crl = old.crl if old is not None else None  # keep the last good list; staleness still applies
            self._files[path] = _Loaded(stamp, crl, error)
        self.errors = errors + [f.error for f in self._files.values() if f.error]
        self._by_issuer = {f.crl.issuer.rfc4514_string(): f.crl for f in self._files.values() if f.crl is not None}

    def _verified(self, data: bytes) -> x509.CertificateRevocationList:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
        for issuer in self._issuers:
            if issuer.subject == crl.issuer and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return crl
        raise ValueError(f"not signed by a configured issuer ({crl.issuer.rfc4514_string()})")

    def status(self, cert: x509.Certificate) -> CertStatus:
        """`revoked`, `good`, or `unknown` (no list for its issuer, or the list is stale)."""
        if self._mono() - self._checked >= self._interval:
            self.reload()
        crl = self._by_issuer.get(_issuer_key(cert))
        if crl is None:
            problems = f" (CRL files: {'; '.join(self.errors)})" if self.errors else ""
            return CertStatus("unknown", "crl", f"no CRL for this issuer{problems}")
        next_update = crl.next_update_utc
        if next_update is None or self._wall() > next_update.timestamp() + self._grace:
            return CertStatus("unknown", "crl", f"CRL of {crl.issuer.rfc4514_string()} is stale "
                              f"(next_update {next_update})")
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            return CertStatus("revoked", "crl", f"revoked at {entry.revocation_date_utc.isoformat()}")
        return CertStatus("good", "crl")


    def files(self) -> list[dict[str, object]]:
        """Each CRL file as last read, for the posture report: its issuer, next update, entries, and `fresh`,
        `stale` (past next_update plus the grace: it answers nothing) or `unusable` (with the reason)."""
        out: list[dict[str, object]] = []
        for path in self._paths:
            loaded = self._files.get(path)
            crl = loaded.crl if loaded is not None else None
            if crl is None:
                error = loaded.error if loaded is not None else next((e for e in self.errors if str(path) in e), "")
                out.append({"file": str(path), "state": "unusable", "reason": error or "not read"})
                continue
            next_update = crl.next_update_utc
            stale = next_update is None or self._wall() > next_update.timestamp() + self._grace
            out.append({"file": str(path), "issuer": crl.issuer.rfc4514_string(),
                        "next_update": next_update.timestamp() if next_update is not None else None,
                        "revoked": len(crl), "state": "stale" if stale else "fresh",
                        "reason": loaded.error if loaded is not None else ""})
        return out


def _issuer_key(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string()
