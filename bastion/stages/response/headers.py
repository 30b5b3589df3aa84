"""Response headers the gateway owns: security headers and CORS, computed once per route.

CORS belongs to the gateway: an upstream's `Access-Control-*` headers are always removed, so an upstream that
reflects any `Origin` cannot widen what the API's policy allows (Fetch standard §3.2).
"""

from __future__ import annotations

from bastion.http.headers import SOFTWARE
from bastion.stages.response.config import CorsPolicy, SecurityHeaders


class HeaderSet:
    """The security headers of one route: fixed values built once, added per response."""

    def __init__(self, policy: SecurityHeaders) -> None:
        self.policy = policy
        fixed: list[tuple[str, str]] = []
        if policy.nosniff:
            fixed.append(("x-content-type-options", "nosniff"))
        if policy.frame_options != "off":
            fixed.append(("x-frame-options", policy.frame_options.upper()))
            ancestors = "'none'" if policy.frame_options == "deny" else "'self'"
            fixed.append(("content-security-policy", f"frame-ancestors {ancestors}"))  # CSP Level 2 §7.7.3
        if policy.referrer_policy != "off":
            fixed.append(("referrer-policy", policy.referrer_policy))
        self.fixed = tuple(fixed)
        self.owned = frozenset(name for name, _ in fixed if name != "content-security-policy") | {
            "strict-transport-security"}
        hsts = ""
        if policy.hsts_max_age > 0:  # RFC 6797 §6.1
            hsts = f"max-age={int(policy.hsts_max_age)}"
            if policy.hsts_include_subdomains:
                hsts += "; includeSubDomains"
        self.hsts = hsts
        self.no_store = policy.no_store_authenticated
        self.keep_cache = policy.keep_upstream_cache_control
        # the same, as bytes for an HTTP/1.1 head (`ResponseFilter.stream_fields`)
        self.drop = frozenset(name.encode() for name in self.owned)
        self.drop_no_store = self.drop | {b"cache-control", b"pragma", b"expires"}
        self.serialised = "".join(f"{name}: {value}\r\n" for name, value in self.fixed).encode("latin-1")
        self.serialised_no_store = b"cache-control: no-store\r\n" + self.serialised
        self.serialised_hsts = f"strict-transport-security: {hsts}\r\n".encode("latin-1") if hsts else b""

    def apply(self, headers: list[tuple[str, str]], tls: bool, authenticated: bool) -> None:
        """Add this route's headers to `headers` (in place); the upstream's copies of them are replaced.

        A second `Content-Security-Policy` field is added, never merged: browsers enforce every CSP they get,
        so the upstream's own policy still applies and `frame-ancestors` can only get stricter.
        """
        owned = self.owned
        cached = authenticated and self.no_store
        upstream_cache = any(name == "cache-control" for name, _ in headers)
        if cached and not (self.keep_cache and upstream_cache):
            headers[:] = [(n, v) for n, v in headers if n not in owned and n not in ("cache-control", "pragma",
                                                                                    "expires")]
            headers.append(("cache-control", "no-store"))  # RFC 9111 §5.2.2.5
        else:
            headers[:] = [(n, v) for n, v in headers if n not in owned]
        headers.extend(self.fixed)
        if tls and self.hsts:  # RFC 6797 §7.2: HSTS over plaintext is ignored, and never sent
            headers.append(("strict-transport-security", self.hsts))


class Cors:
    """The CORS policy of one route. `enabled` is False while it has no origins."""

    def __init__(self, policy: CorsPolicy, route_methods: frozenset[str]) -> None:
        self.origins = frozenset(policy.allow_origins)
        self.enabled = bool(self.origins)
        methods = [m for m in policy.allow_methods if m in route_methods or (m == "HEAD" and "GET" in route_methods)]
        self.methods = frozenset(methods)
        self.headers = frozenset(policy.allow_headers)
        self.credentials = policy.allow_credentials
        self.preflight_fixed: tuple[tuple[str, str], ...] = tuple(
            item for item in (
                ("access-control-allow-methods", ", ".join(methods)) if methods else None,
                ("access-control-allow-headers", ", ".join(policy.allow_headers)) if policy.allow_headers else None,
                ("access-control-max-age", str(int(policy.max_age))),
            ) if item is not None
        )
        self.expose = ", ".join(policy.expose_headers)

    def allowed(self, origin: str | None) -> bool:
        # Fetch §3.2.5: the Origin is serialised lower-case by browsers; an exact match, never a pattern
        return origin is not None and origin in self.origins

    def preflight(self, origin: str, method: str, request_headers: str | None) -> tuple[int, list[tuple[str, str]]]:
        """Fetch §4.8 CORS-preflight fetch: 204 with the allowances, or 403 without any."""
        vary = [("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if not self.allowed(origin) or method not in self.methods:
            return 403, vary
        asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
        if any(h not in self.headers for h in asked):
            return 403, vary
        out = [("access-control-allow-origin", origin)]
        if self.credentials:
            out.append(("access-control-allow-credentials", "true"))
        out.extend(self.preflight_fixed)
        return 204, [*out, *vary]

    def apply(self, headers: list[tuple[str, str]], origin: str | None) -> None:
        """An actual response (in place): upstream CORS headers removed, ours added, `Vary: Origin`."""
        headers[:] = [(n, v) for n, v in headers if not n.startswith("access-control-")]
        if not self.enabled:
            return
        _vary_origin(headers)
        if origin is None or not self.allowed(origin):
            return
        headers.append(("access-control-allow-origin", origin))
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if self.expose:
            headers.append(("access-control-expose-headers", self.expose))


def _vary_origin(headers: list[tuple[str, str]]) -> None:
    """RFC 9110 §12.5.5: the answer depends on Origin, so shared caches must key on it."""
    first = None
    for i, (name, value) in enumerate(headers):
        if name == "vary":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "*" in tokens or "origin" in tokens:
                return
            first = i if first is None else first
    if first is None:
        headers.append(("vary", "Origin"))
    else:
        headers[first] = ("vary", f"{headers[first][1]}, Origin")


__all__ = ["SOFTWARE", "Cors", "HeaderSet"]
