"""Transport control: TLS, verified client certificates (mTLS) and their revocation status, required per class.

A plaintext request to a route whose class requires TLS is refused, never redirected: a redirect would already
have sent the credential in the clear. The handshake itself (version, suites, group, tickets, ALPN) is the
listener's (bastion/server/tls.py); `validate` makes every TLS listener meet every class (listeners.py).
With `revocation: soft|hard` the verified client certificate is checked against CRLs and OCSP (revocation.py):
revoked -> 403 `certificate_revoked` naming the serial in the audit event; unknown -> 403 `revocation_unknown`
(hard) or a `flag` decision (soft).
"""

from __future__ import annotations

from typing import Any

from bastion.context import Continue, ControlRecord, Decision, Deny, RequestContext
from bastion.stages.base import RouteInfo, Services
from bastion.stages.transport.config import TransportPolicy
from bastion.stages.transport.revocation import Revocation, load_revocation

__all__ = ["TransportPolicy", "TransportStage", "build", "prepare"]

_REVOKED = "The client certificate has been revoked."
_UNCHECKED = "The client certificate's revocation status could not be checked."


class TransportStage:
    """Refuses requests that did not arrive over the transport the route's class demands."""

    control = "transport"
    needs_body = False

    def __init__(self, policy: TransportPolicy, route: RouteInfo, revocation: Revocation | None = None) -> None:
        self._need_tls = policy.tls == "required"
        self._need_mtls = policy.mtls == "required"
        self._tls_policy = route.policy_id("transport.tls")
        self._mtls_policy = route.policy_id("transport.mtls")
        self._allow = Continue(self._mtls_policy if self._need_mtls else self._tls_policy)
        self._revocation = revocation if policy.revocation != "off" else None
        self._hard = policy.revocation == "hard"
        self._rev_policy = route.policy_id("transport.revocation")

    async def check(self, ctx: RequestContext) -> Decision:
        if (self._need_tls or self._need_mtls) and not ctx.tls:
            return Deny(403, "tls_required", self._tls_policy, "This API must be called over HTTPS.")
        if self._need_mtls and ctx.peer_cert is None:
            return Deny(403, "client_certificate_required", self._mtls_policy,
                        "This API requires a client certificate.")
        if self._revocation is not None and ctx.peer_cert is not None:
            return await self._check_revocation(ctx, ctx.peer_cert, self._revocation)
        return self._allow

    async def _check_revocation(self, ctx: RequestContext, der: bytes, revocation: Revocation) -> Decision:
        serial, status = await revocation.check(der)
        if status.state == "revoked":  # the audit event names the serial and who said so
            return Deny(403, "certificate_revoked", self._rev_policy, _REVOKED,
                        log_detail=f"client certificate serial {serial} revoked ({status.source}: {status.detail})")
        if status.state == "unknown":
            detail = f"client certificate serial {serial}: {status.source}: {status.detail}"
            if self._hard:  # fail closed: an unreachable responder must not let a revoked partner in
                return Deny(403, "revocation_unknown", self._rev_policy, _UNCHECKED, log_detail=detail)
            ctx.records.append(ControlRecord("transport", "flag", self._rev_policy, "revocation_unknown"))
        return self._allow


def prepare(config: Any, services: Services) -> Revocation:
    """The revocation sources (`gateway.revocation`), shared by every route of the compiled config."""
    return load_revocation(config.gateway.revocation, services)


def build(policy: TransportPolicy, route: RouteInfo, shared: Revocation | None) -> TransportStage | None:
    if policy.tls == "optional" and policy.mtls == "optional":
        return None
    return TransportStage(policy, route, shared)
