"""Transport control: TLS and verified client certificates (mTLS) required per class.

A plaintext request to a route whose class requires TLS is refused, never redirected: a redirect would already
have sent the credential in the clear.
"""

from __future__ import annotations

from typing import Literal

from bastion.config.base import Model, control
from bastion.context import Continue, Decision, Deny, RequestContext
from bastion.stages.base import RouteInfo

Requirement = Literal["optional", "required"]


class TransportPolicy(Model):
    """`transport: {tls: required, mtls: optional}`"""

    tls: Requirement = control(
        "optional", stricter="order", order=("optional", "required"),
        description="`required`: plaintext requests are refused with 403 (e.g. `tls: required`).",
    )
    mtls: Requirement = control(
        "optional", stricter="order", order=("optional", "required"),
        description="`required`: a client certificate verified against the listener's CA is required.",
    )


class TransportStage:
    """Refuses requests that did not arrive over the transport the route's class demands."""

    control = "transport"
    needs_body = False

    def __init__(self, policy: TransportPolicy, route: RouteInfo) -> None:
        self._need_tls = policy.tls == "required"
        self._need_mtls = policy.mtls == "required"
        self._tls_policy = route.policy_id("transport.tls")
        self._mtls_policy = route.policy_id("transport.mtls")
        self._allow = Continue(self._mtls_policy if self._need_mtls else self._tls_policy)

    async def check(self, ctx: RequestContext) -> Decision:
        if (self._need_tls or self._need_mtls) and not ctx.tls:
            return Deny(403, "tls_required", self._tls_policy, "This API must be called over HTTPS.")
        if self._need_mtls and ctx.peer_cert is None:
            return Deny(403, "client_certificate_required", self._mtls_policy,
                        "This API requires a client certificate.")
        return self._allow


def build(policy: TransportPolicy, route: RouteInfo, shared: object) -> TransportStage | None:
    if policy.tls == "optional" and policy.mtls == "optional":
        return None
    return TransportStage(policy, route)
