"""`gateway.admin.auth`: who may call the admin API (the model only; `bastion.posture.admin_auth` enforces it).

```yaml
gateway:
  admin:
    auth:
      provider: corp                 # a JWT provider of `providers.jwt`; its tokens need `scope`
      scope: bastion:admin
      token_sha256: [9f86d0...]      # optional static tokens (hash only)
      client_certificates: ["CN=ops-admin,O=Example"]
      open_paths: [/healthz, /readyz]
```
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from bastion.config.base import Model
from bastion.config.secrets import SecretRef


class AdminAuthConfig(Model):
    """`gateway.admin.auth`: who may call the admin API. With no method configured every call is refused,
    except `open_paths`."""

    provider: str | None = Field(None, description="JWT provider (name in `providers.jwt`) of admin tokens.")
    scope: str = Field("bastion:admin", min_length=1, description="Scope an admin token must carry.")
    token_sha256: list[str] = Field(default_factory=list,
                                    description="SHA-256 (hex) of static admin bearer tokens.")
    tokens: list[SecretRef] = Field(default_factory=list, description="Static admin bearer tokens by reference: "
                                    "`[{env: BASTION_ADMIN_TOKEN}, {file: secrets/admin-token}]`.")
    client_certificates: list[str] = Field(default_factory=list,
                                           description="Subjects (RFC 4514) or SANs of admin client certificates.")
    require_client_certificate: bool = Field(False, description="Require a listed client certificate, and a "
                                                                "token too when tokens are configured.")
    open_paths: list[str] = Field(default_factory=lambda: ["/healthz", "/readyz"],
                                  description="Paths served without credentials.")

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for item in value:
            if len(item) != 64 or any(c not in "0123456789abcdefABCDEF" for c in item):
                raise ValueError("token_sha256 holds hex SHA-256 digests (64 characters), never tokens")
        return [v.lower() for v in value]

    @model_validator(mode="after")
    def _cert_list(self) -> AdminAuthConfig:
        if self.require_client_certificate and not self.client_certificates:
            raise ValueError("require_client_certificate needs client_certificates (who is an admin)")
        return self
