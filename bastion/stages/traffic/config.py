"""Config models of the traffic layer: size and time limits enforced by the data plane itself."""

from __future__ import annotations

from bastion.config.base import Duration, Model, Size, control


class TrafficPolicy(Model):
    """`traffic: {max_body_bytes: 1MiB, upstream_timeout: 30s}`"""

    max_body_bytes: Size = control(
        1024 * 1024, stricter="lower",
        description="Largest request body accepted: a larger Content-Length gets 413 before reading; "
        "a chunked body gets 413 the moment it passes the limit (e.g. `max_body_bytes: 64KiB`).",
    )
    upstream_connect_timeout: Duration = control(
        5.0, stricter="lower", description="Connecting to the upstream (502 after, e.g. `5s`).",
    )
    upstream_timeout: Duration = control(
        30.0, stricter="lower", description="Waiting for the upstream's response headers (504 after).",
    )
