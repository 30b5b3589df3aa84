"""WebSocket (RFC 6455) without IO: a route's limits, the opening handshake's checks and the accept value.

```yaml
routes:
  - {name: chat, path: /chat, methods: [GET], websocket: true}
  - name: feed
    path: /feed
    methods: [GET]
    websocket: {max_message_bytes: 64KiB, idle_timeout: 2m, messages_per_second: 20, burst: 40}
```
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from pydantic import Field

from bastion.config.base import Duration, Model, Size
from bastion.context import Deny
from bastion.http.headers import first_header

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


class WebSocketConfig(Model):
    """Limits of the WebSocket sessions of one route (`websocket: true` takes these defaults)."""

    max_message_bytes: Size = Field(256 * 1024, ge=125, description="Largest message either way; a larger one "
                                    "closes the session with 1009 (Message Too Big).")
    idle_timeout: Duration = Field(60.0, gt=0, description="No message either way for this long: close 1001.")
    messages_per_second: float = Field(50.0, gt=0, description="Sustained rate of client messages.")
    burst: int = Field(100, ge=1, description="Client messages allowed at once above the rate; beyond, close "
                       "1008 (Policy Violation).")
    max_duration: Duration | None = Field(None, gt=0, description="Longest session, whatever happens in it.")
    revocation_interval: Duration = Field(5.0, gt=0, description="How often a session's credential is checked "
                                          "against revocations (CAEP/SSF, admin); its `exp` is checked each second.")


def websocket_config(value: bool | WebSocketConfig) -> WebSocketConfig | None:
    """A route's `websocket:` as its limits (`true`: the defaults), or None when it takes no upgrades."""
    if value is True:
        return WebSocketConfig()
    return value or None


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid client opening handshake: its key, and the accept value the answer must carry."""

    key: str
    accept: str


def wants_websocket(headers: list[tuple[str, str]]) -> bool:
    """`Upgrade: websocket` asked for (RFC 6455 §4.1); any other upgrade stays refused."""
    upgrade = first_header(headers, "upgrade")
    return upgrade is not None and "websocket" in [t.strip().lower() for t in upgrade.split(",")]


def accept_value(key: str) -> str:
    """RFC 6455 §4.2.2 step 5.4: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def check_handshake(method: str, version: str, headers: list[tuple[str, str]],
                    policy_id: str) -> Handshake | Deny:
    """RFC 6455 §4.2.1: what a server must find in the opening handshake; a "no" says what was wrong."""
    if method != "GET" or version != "1.1":
        return Deny(400, "websocket_bad_handshake", policy_id, log_detail="not a GET over HTTP/1.1", close=True)
    connection = first_header(headers, "connection") or ""
    if "upgrade" not in [t.strip().lower() for t in connection.split(",")]:
        return Deny(400, "websocket_bad_handshake", policy_id, log_detail="Connection lacks upgrade", close=True)
    if first_header(headers, "sec-websocket-version") != "13":  # §4.4: tell the client what we speak
        return Deny(426, "websocket_bad_version", policy_id, headers=(("sec-websocket-version", "13"),), close=True)
    key = first_header(headers, "sec-websocket-key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (ValueError, binascii.Error):
        return Deny(400, "websocket_bad_handshake", policy_id, log_detail="Sec-WebSocket-Key is not 16 bytes",
                    close=True)
    return Handshake(key, accept_value(key))


def check_answer(status: int, headers: list[tuple[str, str]], handshake: Handshake,
                 offered: str | None) -> str | None:
    """The upstream's answer to the forwarded handshake (RFC 6455 §4.1, the client's checks); None when good,
    else the reason to refuse it."""
    if status != 101:
        return "websocket_upstream_refused"
    upgrade = (first_header(headers, "upgrade") or "").lower()
    if upgrade != "websocket" or first_header(headers, "sec-websocket-accept") != handshake.accept:
        return "websocket_upstream_bad_handshake"
    if first_header(headers, "sec-websocket-extensions"):  # none were offered: the gateway reads every frame
        return "websocket_upstream_bad_handshake"
    chosen = first_header(headers, "sec-websocket-protocol")
    if chosen is not None and chosen not in [p.strip() for p in (offered or "").split(",")]:
        return "websocket_upstream_bad_handshake"
    return None
