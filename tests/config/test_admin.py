"""`gateway.admin.auth`: the model's own rules (enforcement: tests/posture/test_admin_auth.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.admin import AdminAuthConfig


def test_defaults_serve_only_the_probes_without_credentials():
    config = AdminAuthConfig()
    assert config.provider is None and config.scope == "bastion:admin"
    assert config.open_paths == ["/healthz", "/readyz"] and not config.require_client_certificate


def test_token_hashes_are_kept_lower_case():
    digest = "AB" * 32
    assert AdminAuthConfig(token_sha256=[digest]).token_sha256 == ["ab" * 32]


@pytest.mark.parametrize(("fields", "match"), [
    ({"token_sha256": ["not-a-hash"]}, "hex SHA-256"),
    ({"token_sha256": ["g" * 64]}, "hex SHA-256"),
    ({"token_sha256": ["a" * 63]}, "hex SHA-256"),
    ({"require_client_certificate": True}, "client_certificates"),
    ({"scope": ""}, "scope"),
    ({"unknown": 1}, "unknown"),
])
def test_invalid_settings_are_refused(fields, match):
    with pytest.raises(ValidationError, match=match):
        AdminAuthConfig.model_validate(fields)
