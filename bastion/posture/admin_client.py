"""The CLI's client of the running gateway's admin API: `reload`, `blocks`, `revoke`, `probe --publish`, ...

A CLI helper, not the hot path: one urllib request per call, the answer printed as it came.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from bastion.config.loader import ConfigError, load_config


def admin_url(path: str, admin: str | None) -> str:
    """The admin listener's URL: given, or from the config (raises ConfigError)."""
    if admin is not None:
        return admin
    cfg = load_config(path).model
    scheme = "https" if cfg.gateway.admin.tls else "http"
    return f"{scheme}://{cfg.gateway.admin.address}:{cfg.gateway.admin.port}"


def admin_call(path: str, admin: str | None, endpoint: str, method: str = "GET",
               doc: dict[str, Any] | None = None) -> int:
    """Call the running gateway's admin API and print its JSON answer. The bearer token, when the admin API
    requires one, comes from $BASTION_ADMIN_TOKEN (never from the command line, where `ps` shows it)."""
    try:
        admin = admin_url(path, admin)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("BASTION_ADMIN_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(doc).encode() if doc is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(admin.rstrip("/") + endpoint, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the admin listener at {admin}: {exc}", file=sys.stderr)
        return 1
