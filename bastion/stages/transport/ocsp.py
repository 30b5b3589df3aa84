"""OCSP (RFC 6960) for client certificates: ask the responder, verify its signed answer, cache it.

The responder is the one configured, else the certificate's AIA `OCSP` URL (RFC 5280 §4.2.2.1). An answer counts
only if it is signed by the certificate's issuer or by a responder that issuer delegated with the
id-kp-OCSPSigning purpose (RFC 6960 §4.2.2.2), names the certificate asked about, and is not past its
`next_update` plus the grace. Answers are kept in a bounded LRU until their `next_update`; when a refresh fails,
a kept answer still inside the grace is used. No nonce (RFC 5019 §4: answers are cached and shared).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from bastion.http.fetch import FetchError, HttpResponse, fetch
from bastion.stages.transport.status import CertStatus

Fetch = Callable[..., Awaitable[HttpResponse]]
_SKEW = 300.0  # seconds a responder's clock may run ahead of ours
_DEFAULT_TTL = 300.0  # how long an answer without next_update is kept
_MAX_RESPONSE = 64 * 1024


class OcspChecker:
    """Revocation status of client certificates from OCSP responders, cached per (issuer, serial)."""

    def __init__(self, issuers: list[x509.Certificate], *, responder: str | None, timeout: float, grace: float,
                 cache_size: int, wall_clock: Callable[[], float], fetcher: Fetch = fetch) -> None:
        self._issuers = issuers
        self._responder = responder
        self._timeout = timeout
        self._grace = grace
        self._size = cache_size
        self._wall = wall_clock
        self._fetch = fetcher
        self._cache: OrderedDict[tuple[bytes, int], tuple[CertStatus, float]] = OrderedDict()
        self._inflight: dict[tuple[bytes, int], asyncio.Future[CertStatus]] = {}
        self._verified: OrderedDict[tuple[str, int, bytes], tuple[x509.Certificate, bytes] | None] = OrderedDict()
        self.fetches = 0  # responder round trips, for tests and metrics

    async def status(self, cert: x509.Certificate) -> CertStatus:
        found = self._issuer_of(cert)
        if found is None:
            return CertStatus("unknown", "ocsp", "issuer is not a configured revocation issuer")
        issuer, issuer_id = found
        key = (issuer_id, cert.serial_number)
        kept = self._cache.get(key)
        now = self._wall()
        if kept is not None and now < kept[1]:
            self._cache.move_to_end(key)
            return kept[0]
        pending = self._inflight.get(key)
        if pending is not None:  # one round trip per certificate however many requests wait on it
            return await asyncio.shield(pending)
        future: asyncio.Future[CertStatus] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer, until = await self._ask(cert, issuer)
            if answer.state == "unknown" and kept is not None and now <= kept[1] + self._grace:
                answer = kept[0]  # the responder failed: the last answer still holds within the grace
            elif answer.state != "unknown":
                self._keep(key, answer, until)
            future.set_result(answer)
            return answer
        finally:
            del self._inflight[key]
            if not future.done():
                future.cancel()

    def _keep(self, key: tuple[bytes, int], answer: CertStatus, until: float) -> None:
        self._cache[key] = (answer, until)
        self._cache.move_to_end(key)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)

    def _issuer_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, bytes] | None:
        """The configured issuer that signed `cert`, verified once per certificate (bounded memo)."""
        memo = (cert.issuer.rfc4514_string(), cert.serial_number, cert.signature)
        if memo in self._verified:
            self._verified.move_to_end(memo)
            return self._verified[memo]
        found = None
        for issuer in self._issuers:
            if issuer.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                found = (issuer, issuer.fingerprint(hashes.SHA256()))
                break
        self._verified[memo] = found
        if len(self._verified) > self._size:
            self._verified.popitem(last=False)
        return found

    async def _ask(self, cert: x509.Certificate, issuer: x509.Certificate) -> tuple[CertStatus, float]:
        url = self._responder or _aia_ocsp_url(cert)
        if url is None:
            return CertStatus("unknown", "ocsp", "no OCSP responder (no AIA URL, none configured)"), 0.0
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        self.fetches += 1
        try:
            response = await self._fetch(url, method="POST", body=request.public_bytes(serialization.Encoding.DER),
                                         headers=(("Content-Type", "application/ocsp-request"),),
                                         timeout=self._timeout, max_bytes=_MAX_RESPONSE)
        except FetchError as exc:
            return CertStatus("unknown", "ocsp", f"responder {url} unreachable: {exc}"), 0.0
        if response.status != 200:
            return CertStatus("unknown", "ocsp", f"responder {url} answered HTTP {response.status}"), 0.0
        try:
            return self._verify(ocsp.load_der_ocsp_response(response.body), request, issuer)
        except ValueError as exc:
            return CertStatus("unknown", "ocsp", f"unusable answer from {url}: {exc}"), 0.0

    def _verify(self, answer: ocsp.OCSPResponse, request: ocsp.OCSPRequest,
                issuer: x509.Certificate) -> tuple[CertStatus, float]:
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise ValueError(f"status {answer.response_status.name}")
        _check_signature(answer, issuer)
        for single in answer.responses:
            if (single.serial_number, single.issuer_key_hash, single.issuer_name_hash) != (
                    request.serial_number, request.issuer_key_hash, request.issuer_name_hash):
                continue
            now = self._wall()
            if single.this_update_utc.timestamp() > now + _SKEW:
                raise ValueError("this_update is in the future")
            next_update = single.next_update_utc
            until = next_update.timestamp() if next_update is not None else now + _DEFAULT_TTL
            if now > until + self._grace:
                raise ValueError(f"stale (next_update {next_update})")
            if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                when = single.revocation_time_utc
                return CertStatus("revoked", "ocsp", f"revoked at {when.isoformat() if when else '?'}"), until
            if single.certificate_status == ocsp.OCSPCertStatus.GOOD:
                return CertStatus("good", "ocsp"), until
            return CertStatus("unknown", "ocsp", "responder does not know the certificate"), until
        raise ValueError("no answer for the certificate asked about")


def _check_signature(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """RFC 6960 §4.2.2.2: signed by the issuer, or by a certificate it issued for OCSP signing."""
    signer = issuer
    for candidate in answer.certificates:
        try:
            candidate.verify_directly_issued_by(issuer)
            purposes = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in purposes:
            signer = candidate
            break
    key: Any = signer.public_key()
    algorithm = answer.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            key.verify(answer.signature, answer.tbs_response_bytes)  # Ed25519 / Ed448
    except InvalidSignature:
        raise ValueError("signature does not verify against the issuer or a delegated responder") from None


def _aia_ocsp_url(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            return str(desc.access_location.value)
    return None
