"""CrlStore on real CRL files (PEM and DER): which list counts, when it is stale, when it is read again."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.stages.transport.crl import CrlStore
from tests.stages.transport.pki import EPOCH, PartnerCa


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH.timestamp() + 60

    def __call__(self) -> float:
        return self.now


def test_good_revoked_unknown_and_stale(tmp_path):
    ca, other = PartnerCa(), PartnerCa("Other CA")
    good, _ = ca.issue("good")
    bad, _ = ca.issue("bad")
    stranger, _ = other.issue("stranger")
    ca.revoked[bad.serial_number] = EPOCH
    der = x509.load_pem_x509_crl(ca.crl()).public_bytes(serialization.Encoding.DER)
    (tmp_path / "ca.crl").write_bytes(der)  # DER is read as well as PEM
    clock = Clock()
    store = CrlStore([tmp_path / "ca.crl"], [ca.cert, other.cert], grace=3600, reload_interval=0,
                     wall_clock=clock, monotonic=clock)
    assert [store.status(c).state for c in (good, bad, stranger)] == ["good", "revoked", "unknown"]
    [listed] = store.files()  # what the posture report shows of it
    assert (listed["state"], listed["revoked"], listed["next_update"]) == (
        "fresh", 1, (EPOCH + dt.timedelta(days=7)).timestamp())
    clock.now = (EPOCH + dt.timedelta(days=7, minutes=59)).timestamp()  # past next_update, inside the grace
    assert store.status(bad).state == "revoked"
    clock.now = (EPOCH + dt.timedelta(days=7, hours=1, seconds=1)).timestamp()
    stale = store.status(bad)
    assert stale.state == "unknown" and "stale" in stale.detail
    assert store.files()[0]["state"] == "stale"


def test_a_list_signed_by_an_unconfigured_key_is_ignored_and_reported(tmp_path):
    ca = PartnerCa()
    cert, _ = ca.issue("x")
    ca.revoked[cert.serial_number] = EPOCH
    impostor = PartnerCa("Partner CA")  # same name, another key
    (tmp_path / "ca.crl").write_bytes(ca.crl(signer=impostor.key))
    clock = Clock()
    store = CrlStore([tmp_path / "ca.crl", tmp_path / "missing.crl"], [ca.cert], grace=0, reload_interval=0,
                     wall_clock=clock, monotonic=clock)
    status = store.status(cert)
    assert status.state == "unknown" and "not signed by a configured issuer" in status.detail
    assert "missing.crl" in status.detail
    assert [(f["state"], "not signed" in str(f["reason"]) or "No such file" in str(f["reason"]))
            for f in store.files()] == [("unusable", True), ("unusable", True)]
