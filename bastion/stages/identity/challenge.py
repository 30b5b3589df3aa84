"""The claims challenge a client gets when a Security Event revoked its token (RFC 6750 §3, RFC 9470 §3).

Most revoking events (`session-revoked`, `credential-change`) answer `error="invalid_token"`: get a new token.
A step-up event (CAEP `assurance-level-change` by default) answers `error="insufficient_user_authentication"`
with the `acr_values` and/or `max_age` the issuer expects, so the client knows to re-authenticate the user at
that level rather than just refresh. What to ask for travels with the revocation record, in its `source`
(`ssf:corp;step-up;acr=urn:mfa;max_age=300`), so every gateway instance answers the same.
"""

from __future__ import annotations

from dataclasses import dataclass

_MARK = ";step-up"


@dataclass(frozen=True, slots=True)
class StepUp:
    """What the user must re-authenticate with: ACR values (RFC 9470 §3 `acr_values`) and/or a `max_age`."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    def source(self, origin: str) -> str:
        """`origin` (`ssf:corp`) with this step-up appended, as the revocation record's source."""
        acr = ",".join(v for v in self.acr_values if v and not any(c in v for c in ' ,;"\\'))
        age = "" if self.max_age is None else str(int(self.max_age))
        return f"{origin}{_MARK};acr={acr};max_age={age}"

    @classmethod
    def from_source(cls, source: str) -> StepUp | None:
        """The step-up a record's source asks for; None for a plain revocation."""
        if _MARK not in source:
            return None
        fields = dict(part.split("=", 1) for part in source.split(_MARK, 1)[1].split(";") if "=" in part)
        acr = tuple(v for v in fields.get("acr", "").split(",") if v)
        age = fields.get("max_age", "")
        return cls(acr, int(age) if age.isdigit() else None)

    def challenge(self, scheme: str, realm: str) -> str:
        """RFC 9470 §3: `Bearer realm=..., error="insufficient_user_authentication", acr_values=..., max_age=...`"""
        out = (f'{scheme} realm="{realm}", error="insufficient_user_authentication", '
               'error_description="A different authentication level is required"')
        if self.acr_values:
            out += f', acr_values="{" ".join(self.acr_values)}"'
        if self.max_age is not None:
            out += f', max_age="{self.max_age}"'
        return out
