"""Is this client certificate revoked? CRL files first (local, cheap), then OCSP when the CRLs cannot say."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cryptography import x509

from bastion.stages.base import Services
from bastion.stages.transport.config import RevocationConfig
from bastion.stages.transport.crl import CrlStore
from bastion.stages.transport.ocsp import OcspChecker
from bastion.stages.transport.status import CertStatus

_PARSED = 4096  # client certificates kept parsed (LRU): a partner's certificate is parsed once, not per request


class Revocation:
    """Revocation status of verified client certificates, shared by every route of a compiled config."""

    def __init__(self, crls: CrlStore, ocsp: OcspChecker | None) -> None:
        self.crls = crls
        self.ocsp = ocsp
        self._parsed: OrderedDict[bytes, tuple[x509.Certificate, str]] = OrderedDict()

    def _parse(self, der: bytes) -> tuple[x509.Certificate, str] | None:
        found = self._parsed.get(der)
        if found is not None:
            self._parsed.move_to_end(der)
            return found
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        found = self._parsed[der] = (cert, f"{cert.serial_number:x}")
        if len(self._parsed) > _PARSED:
            self._parsed.popitem(last=False)
        return found

    async def check(self, der: bytes) -> tuple[str, CertStatus]:
        """(the serial in hex, its status): a fresh CRL that lists the issuer decides; else OCSP, if enabled."""
        parsed = self._parse(der)
        if parsed is None:
            return "?", CertStatus("unknown", "certificate", "cannot parse the client certificate")
        cert, serial = parsed
        status = self.crls.status(cert)
        if status.state != "unknown" or self.ocsp is None:
            return serial, status
        return serial, await self.ocsp.status(cert)


def load_revocation(config: RevocationConfig, services: Services) -> Revocation:
    """Read the issuers and CRLs; raises ValueError (a config error) when an issuer file cannot be read."""
    issuers: list[x509.Certificate] = []
    for path in map(services.resolve, config.issuers):
        try:
            issuers += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"revocation issuer {path}: {exc}") from None
    crls = CrlStore([services.resolve(p) for p in config.crls], issuers, grace=config.grace,
                    reload_interval=config.reload_interval, wall_clock=services.wall_clock,
                    monotonic=services.monotonic)
    fetcher: Any = services.ocsp_fetcher  # tests may count or fail round trips
    ocsp = None
    if config.ocsp:
        ocsp = OcspChecker(issuers, responder=config.ocsp_responder, timeout=config.timeout, grace=config.grace,
                           cache_size=config.cache_size, wall_clock=services.wall_clock,
                           **({"fetcher": fetcher} if fetcher else {}))
    return Revocation(crls, ocsp)
