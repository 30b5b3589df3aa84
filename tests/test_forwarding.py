"""The forwarding values compile hands to the server: the upstream's Host authority and pool key."""

from __future__ import annotations

import pytest

from bastion.forwarding import GrpcLimits, Upstream


@pytest.mark.parametrize(("scheme", "port", "authority"), [
    ("http", 80, "api.internal"),
    ("https", 443, "api.internal"),
    ("http", 443, "api.internal:443"),
    ("https", 80, "api.internal:80"),
    ("http", 8080, "api.internal:8080"),
])
def test_authority_omits_only_the_scheme_default_port(scheme, port, authority):
    assert Upstream("orders", scheme, "api.internal", port, "").authority == authority


def test_the_pool_key_separates_every_connection_setting():
    base = Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem")
    assert base == Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem")
    assert hash(base) == hash(Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem"))
    for other in (Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="other.pem"),
                  Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem", allow_private=True),
                  Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem", tls_server_name="x"),
                  Upstream("orders", "https", "api.internal", 443, "/v2", tls_ca="ca.pem")):
        assert other != base and hash(other) != hash(base)
    assert len({base, Upstream("orders", "https", "api.internal", 443, "/v1", tls_ca="ca.pem")}) == 1


def test_grpc_limits_default_to_grpcs_own_receive_limit():
    limits = GrpcLimits()
    assert limits.max_message_bytes == 4 * 1024 * 1024 and limits.max_messages is None
    assert limits.connect_timeout == 5.0 and limits.decode is None
