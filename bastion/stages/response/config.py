"""Config model of the response layer: contract filtering, error rewriting, security headers and CORS.

Every field is a control of its own (`response.undeclared`, `response.security_headers.hsts_max_age`,
`response.cors.allow_origins`, ...), so `validate` can tell a stricter value from a weaker one and an
exception can relax exactly one of them.

```yaml
classes:
  public:
    response:
      undeclared: strip            # allow | strip | block
      max_filter_bytes: 1MiB       # larger JSON responses are not buffered for filtering
      rewrite_errors: true         # upstream 5xx bodies -> generic problem document
      security_headers: {hsts_max_age: 365d, frame_options: deny, referrer_policy: no-referrer}
      cors: {allow_origins: [https://app.example.com], allow_credentials: true}
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import Duration, Model, Size, control

_ORIGIN = re.compile(r"^https?://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
                     r"|\[[0-9a-f:.]+\])(?::\d{1,5})?$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2 token

# Referrer-Policy values from the most to the least revealing (W3C Referrer Policy §3); `off` sends none.
REFERRER_POLICIES = (
    "off", "unsafe-url", "no-referrer-when-downgrade", "origin-when-cross-origin", "origin",
    "strict-origin-when-cross-origin", "same-origin", "strict-origin", "no-referrer",
)


class SecurityHeaders(Model):
    """`security_headers:` the response headers the gateway sets on every answer of a route."""

    hsts_max_age: Duration = control(
        365 * 86400.0, stricter="higher",
        description="`Strict-Transport-Security: max-age=...` on responses sent over TLS (never on plaintext); "
                    "`0` sends none. E.g. `hsts_max_age: 365d`.",
    )
    hsts_include_subdomains: bool = control(
        False, stricter="true", description="Add `includeSubDomains` to HSTS (every subdomain must serve TLS).",
    )
    nosniff: bool = control(True, stricter="true", description="`X-Content-Type-Options: nosniff`.")
    no_store_authenticated: bool = control(
        True, stricter="true",
        description="`Cache-Control: no-store` on responses to authenticated requests (a verified identity or "
                    "an `Authorization` header), replacing the upstream's.",
    )
    keep_upstream_cache_control: bool = control(
        False, stricter="false",
        description="Keep an upstream's own `Cache-Control` on authenticated responses instead of `no-store` "
                    "(for APIs that deliberately cache per-user data, e.g. `private, max-age=60`).",
    )
    frame_options: Literal["off", "sameorigin", "deny"] = control(
        "deny", stricter="order", order=("off", "sameorigin", "deny"),
        description="`X-Frame-Options` and CSP `frame-ancestors` (`deny` -> `'none'`, `sameorigin` -> "
                    "`'self'`): clickjacking.",
    )
    referrer_policy: Literal[REFERRER_POLICIES] = control(  # type: ignore[valid-type]
        "no-referrer", stricter="order", order=REFERRER_POLICIES,
        description="`Referrer-Policy` value, or `off`.",
    )


class CorsPolicy(Model):
    """`cors:` cross-origin access from browsers. Off while `allow_origins` is empty.

    Origins are exact (`scheme://host[:port]`): no `*`, no patterns, no `null`. The class lists the origins its
    APIs may use; an API narrows them (a new origin is a weakening and needs an exception).
    """

    allow_origins: list[str] = control(
        [], stricter="subset",
        description="Exact origins allowed to read responses, e.g. `[https://app.example.com]`.",
    )
    allow_methods: list[str] = control(
        ["GET", "HEAD", "POST"], stricter="subset",
        description="Methods a preflight may allow (and the route must have), e.g. `[GET, POST, PUT]`.",
    )
    allow_headers: list[str] = control(
        ["authorization", "content-type"], stricter="subset",
        description="Request headers a preflight may allow, e.g. `[authorization, content-type, x-api-key]`.",
    )
    expose_headers: list[str] = control(
        [], stricter="subset",
        description="Response headers scripts may read besides the safelisted ones, e.g. `[x-request-id]`.",
    )
    allow_credentials: bool = control(
        False, stricter="false",
        description="`Access-Control-Allow-Credentials: true` (cookies, client certificates, `Authorization`); "
                    "only with explicit `allow_origins`.",
    )
    max_age: Duration = control(
        600.0, stricter="lower", description="How long a browser may cache a preflight (`Access-Control-Max-Age`).",
    )

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            lowered = origin.strip().lower().rstrip("/")
            if "*" in lowered or lowered == "null":
                raise ValueError(f"origin {origin!r}: list exact origins such as https://app.example.com; "
                                 "`*`, patterns and `null` are not allowed")
            if not _ORIGIN.match(lowered):
                raise ValueError(f"origin {origin!r} is not `scheme://host[:port]` (no path), e.g. "
                                 "https://app.example.com")
            out.append(lowered)
        return out

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        for method in value:
            if not _TOKEN.match(method) or method == "*":
                raise ValueError(f"method {method!r}: list method names, no `*`")
        return [m.upper() for m in value]

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _TOKEN.match(name) or name == "*":
                raise ValueError(f"header {name!r}: list header names, no `*`")
        return [n.lower() for n in value]

    @model_validator(mode="after")
    def _credentials(self) -> CorsPolicy:
        if self.allow_credentials and not self.allow_origins:
            raise ValueError("cors.allow_credentials needs explicit origins in cors.allow_origins "
                             "(credentials are never allowed for any origin)")
        return self


class ResponsePolicy(Model):
    """`response: {undeclared: strip, rewrite_errors: true, security_headers: {...}, cors: {...}}`"""

    undeclared: Literal["allow", "strip", "block"] = control(
        "strip", stricter="order", order=("allow", "strip", "block"),
        description="JSON response bodies checked against the operation's response schema for their status and "
                    "Content-Type: undeclared properties (and `writeOnly` ones) are removed (`strip`), or the "
                    "response is refused with 502 (`block`); `allow` forwards bodies untouched.",
    )
    max_filter_bytes: Size = control(
        1024 * 1024, stricter="higher",
        description="Largest response body buffered for filtering. Larger ones are refused with 502 under "
                    "`block`, and forwarded unfiltered (and counted) under `strip`. E.g. `max_filter_bytes: 4MiB`.",
    )
    rewrite_errors: bool = control(
        True, stricter="true",
        description="Replace upstream 5xx bodies (and their headers but `Retry-After`) with a generic RFC 9457 "
                    "problem document carrying the request id: no stack traces or internal hosts leak.",
    )
    error_detail: str | None = Field(
        None, max_length=200,
        description="The `detail` of rewritten 5xx problems (default: `The upstream service failed to process "
                    "the request.`).",
        json_schema_extra={"stricter": "free"},
    )
    security_headers: SecurityHeaders = SecurityHeaders()
    cors: CorsPolicy = CorsPolicy()
