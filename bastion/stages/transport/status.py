"""The answer of a revocation source about one certificate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class CertStatus:
    """`good`, `revoked`, or `unknown` (the source could not say: no list, stale, unreachable, unsigned)."""

    state: Literal["good", "revoked", "unknown"]
    source: str  # "crl" or "ocsp"
    detail: str = ""
