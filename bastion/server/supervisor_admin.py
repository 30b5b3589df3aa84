"""The supervisor's admin listener: every endpoint of the single process, on the supervisor's state and config.

Blocks, revocations and Shared Signals act on the embedded shared state (or Redis), so they reach every worker;
`/readyz` and `/config` show every worker's readiness, config hash and generation; `/reload` is all or none.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bastion.server.admin import AdminApi, AdminBackend, read_events
from bastion.server.admin_routes import _json_body, _reply, block_routes, identity_routes
from bastion.server.http1 import Exchange, Http1Connection
from bastion.server.probe_credentials import probe_credential_routes
from bastion.server.reload import check_routes
from bastion.server.settings import audit_file_path, server_limits
from bastion.server.tls import listener_ssl

if TYPE_CHECKING:
    from bastion.server.supervisor import Supervisor


async def serve_admin(sup: Supervisor, gw: Any) -> asyncio.base_events.Server:
    """Open the admin listener of `gateway.admin` for the supervisor `sup`."""
    routes = {**block_routes(sup.blocks), **identity_routes(lambda: sup.compiled),
              **check_routes(lambda: sup.compiled.config.model.gateway),  # type: ignore[union-attr]
              **probe_credential_routes(lambda: sup.compiled.shared.identity)}  # type: ignore[union-attr]
    routes[("POST", "/blocks/lift")] = lift_everywhere(sup)
    from prometheus_client import Counter

    # the supervisor's refusals, summed with the workers' decisions through the multiprocess files
    refusals = Counter("bastion_decisions_total", "Security decisions by control, outcome and reason.",
                       ["control", "outcome", "reason"], registry=None)
    admin = AdminApi(AdminBackend(
        registry=sup.registry, ready=lambda: False, info=sup.info, reload=sup.reload,
        compiled=lambda: sup.compiled,
        events=lambda: read_events(audit_file_path(sup.compiled.config.model.gateway, sup.base)),  # type: ignore[union-attr]
        auth=lambda: sup.compiled.shared.admin_auth if sup.compiled is not None else None,
        audit=sup.audit, blocks=sup.blocks.list_blocks, extra_routes=routes, readiness=sup.readiness,
        refused=lambda reason: refusals.labels("admin", "deny", reason).inc(),
    ))
    admin_tls = listener_ssl(gw.admin, sup.base) if gw.admin.tls is not None else None
    limits = server_limits(gw)
    return await asyncio.get_running_loop().create_server(
        lambda: Http1Connection(admin.handle, limits, sup.connections), gw.admin.address, gw.admin.port,
        ssl=admin_tls)


def lift_everywhere(sup: Supervisor) -> Any:
    """`POST /blocks/lift`: lift in the shared state, then drop the copy each worker cached (otherwise it would
    last until it expires), then answer: the next request after the answer is served unblocked."""

    async def handler(ex: Exchange, body: bytes) -> None:
        doc = _json_body(body, ("kind", "key"))
        if doc is None:
            return ex.problem(400, "Send {\"kind\": ip|subject|consumer, \"key\": ...}.", "")
        lifted = await sup.blocks.lift(doc["kind"], str(doc["key"]))
        await asyncio.gather(*(s.link.call("forget_block", doc["kind"], str(doc["key"]))
                               for s in sup.slots if s.link is not None), return_exceptions=True)
        _reply(ex, 200, {"lifted": lifted})
    return handler
