"""The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-08 and later) and `Retry-After`.

`RateLimit-Policy: "per-consumer";q=600;w=60` names each limit with its quota `q` and window `w` (seconds);
`RateLimit: "per-consumer";r=12;t=30` says what remains (`r`) and in how many seconds it resets (`t`). Both
are Structured Field lists (RFC 8941): one item per limit, the name a String.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bastion.state import Outcome


def sf_string(value: str) -> str:
    """An RFC 8941 §3.3.3 String: printable ASCII, with `"` and `\\` escaped."""
    cleaned = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(name: str, quota: int, window: float) -> str:
    """One `RateLimit-Policy` item: `"name";q=100;w=60`."""
    return f"{sf_string(name)};q={quota};w={max(1, math.ceil(window))}"


def rate_limit_value(names: Sequence[str], outcomes: Sequence[Outcome]) -> str:
    """`RateLimit`: one `"name";r=<remaining>;t=<seconds>` item per limit (`names` are already sf-strings)."""
    if len(names) == 1 == len(outcomes):  # the common case, on every allowed request: no generator, no join
        outcome = outcomes[0]
        return f"{names[0]};r={max(0, outcome.remaining)};t={max(0, math.ceil(outcome.reset))}"
    return ", ".join([
        f"{name};r={max(0, outcome.remaining)};t={max(0, math.ceil(outcome.reset))}"
        for name, outcome in zip(names, outcomes, strict=True)
    ])


def retry_after(seconds: float) -> str:
    """RFC 9110 §10.2.3 delay-seconds: a whole number, at least 1."""
    return str(max(1, math.ceil(seconds)))
