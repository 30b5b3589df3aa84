"""A small PKI for revocation tests, built with `cryptography`: a CA, client certificates, CRLs, OCSP answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # every date is relative to this: no test depends on today


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class PartnerCa:
    """A CA that issues client certificates (with an AIA OCSP URL), signs CRLs and OCSP responses."""

    def __init__(self, name: str = "Partner CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH - dt.timedelta(days=1)).not_valid_after(EPOCH + dt.timedelta(days=36500))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.revoked: dict[int, dt.datetime] = {}

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, ocsp_url: str | None = None, *, eku: bool = True,
              ocsp_signing: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(EPOCH - dt.timedelta(days=1)).not_valid_after(EPOCH + dt.timedelta(days=36500))
        )
        if ocsp_url:
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
        if ocsp_signing:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        elif eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def write_client(self, directory: Path, stem: str, cert: x509.Certificate,
                     key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    def crl(self, *, this_update: dt.datetime = EPOCH, next_update: dt.timedelta = dt.timedelta(days=7),
            signer: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(this_update).next_update(this_update + next_update))
        for serial, when in self.revoked.items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
        return builder.sign(signer or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def ocsp_answer(self, request_der: bytes, *, this_update: dt.datetime = EPOCH,
                    next_update: dt.timedelta = dt.timedelta(hours=1),
                    responder: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
                    subject: x509.Certificate | None = None) -> bytes:
        """The signed answer to a DER request, as a responder would give it (`subject` is the cert asked for)."""
        request = ocsp.load_der_ocsp_request(request_der)
        if subject is None or subject.serial_number != request.serial_number:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        revoked_at = self.revoked.get(request.serial_number)
        status = ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD
        signer_cert, signer_key = responder or (self.cert, self.key)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=subject, issuer=self.cert, algorithm=hashes.SHA1(), cert_status=status,
            this_update=this_update, next_update=this_update + next_update,
            revocation_time=revoked_at, revocation_reason=None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        if responder is not None:
            builder = builder.certificates([signer_cert])
        return builder.sign(signer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
