"""Admin API endpoints that act on the gateway's state: blocks, revocations, the Shared Signals receiver.

Each returns `{(method, path): handler}` for `AdminBackend.extra_routes`; handlers answer JSON or a problem.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar
from typing import Any

import orjson

from bastion.audit.blocks import BlockList
from bastion.server.http1 import Exchange

# the id of the admin request being answered, set by `AdminApi.handle`: every answer carries it
_REQUEST_ID: ContextVar[str] = ContextVar("admin_request_id", default="")


def request_id() -> str:
    """The current admin request's id (an `x-request-id` header on every admin answer)."""
    return _REQUEST_ID.get()


def new_request_id() -> str:
    """A fresh admin request id, set for the task answering it."""
    rid = "admin-" + os.urandom(8).hex()
    _REQUEST_ID.set(rid)
    _NOTED.set({})
    return rid


# what a handler adds to the admin request's one audit event (e.g. the probe credential it registered)
_NOTED: ContextVar[dict[str, Any]] = ContextVar("admin_audit_detail")


def note(**detail: Any) -> None:
    """Add `detail` to the audit event of the admin request being answered."""
    _NOTED.set({**_NOTED.get({}), **detail})


def noted() -> dict[str, Any]:
    return _NOTED.get({})


def block_routes(blocks: BlockList) -> dict[tuple[str, str], Any]:
    """Admin endpoints for blocks: list, add (`{"kind","key","seconds"}`) and lift (`{"kind","key"}`)."""

    async def listing(ex: Exchange, body: bytes) -> None:
        _reply(ex, 200, {"blocks": await blocks.list_blocks()})

    async def add(ex: Exchange, body: bytes) -> None:
        doc = _json_body(body, ("kind", "key", "seconds"))
        if doc is None or doc["kind"] not in ("ip", "subject", "consumer"):
            return ex.problem(400, "Send {\"kind\": ip|subject|consumer, \"key\": ..., \"seconds\": n}.", request_id())
        until = await blocks.block(doc["kind"], str(doc["key"]), float(doc["seconds"]), reason="operator")
        _reply(ex, 200, {"blocked": until is not None, "until": until})

    async def lift(ex: Exchange, body: bytes) -> None:
        doc = _json_body(body, ("kind", "key"))
        if doc is None:
            return ex.problem(400, "Send {\"kind\": ip|subject|consumer, \"key\": ...}.", request_id())
        _reply(ex, 200, {"lifted": await blocks.lift(doc["kind"], str(doc["key"]))})

    return {("GET", "/blocks"): listing, ("POST", "/blocks"): add, ("POST", "/blocks/lift"): lift}


def identity_routes(current: Any) -> dict[tuple[str, str], Any]:
    """Admin endpoints of the identity layer: the Shared Signals (CAEP) push receiver and revocations.

    Both look up the layer of the config serving now: a reload replaces the receiver and its key cache.
    """
    from bastion.state import StateUnavailable

    def layer() -> Any:
        return current().shared.identity

    async def ssf_events(ex: Exchange, body: bytes) -> None:
        receiver = getattr(layer(), "ssf_receiver", None)
        if receiver is None:
            return ex.problem(404, "No Shared Signals transmitter is configured.", request_id())
        status, answer = await receiver.handle(body, ex.header("content-type") or "", time.time(),
                                               authorization=ex.header("authorization"))
        headers = [("content-type", "application/json")] if answer else []
        ex.respond(status, [*headers, ("cache-control", "no-store"), ("x-request-id", request_id())], answer)

    async def listing(ex: Exchange, body: bytes) -> None:
        try:
            entries = await layer().revocation_store.list_revocations()
        except StateUnavailable:
            return ex.problem(503, "The state backend is unavailable.", request_id())
        _reply(ex, 200, {"revocations": [e.as_dict() for e in entries]})

    async def revoke(ex: Exchange, body: bytes) -> None:
        doc = _json_body(body, ("kind", "value", "seconds"))
        if doc is None:
            return ex.problem(400, "Send {\"kind\": jti|sub|consumer, \"value\": ..., \"seconds\": n}.", request_id())
        try:
            entry = await layer().revocation_store.revoke(doc["kind"], str(doc["value"]),
                                                          time.time() + float(doc["seconds"]), source="admin")
        except ValueError as exc:
            return ex.problem(400, str(exc), request_id())
        except StateUnavailable:
            return ex.problem(503, "The state backend is unavailable.", request_id())
        _reply(ex, 200, {"revoked": entry.as_dict()})

    async def lift(ex: Exchange, body: bytes) -> None:
        doc = _json_body(body, ("kind", "value"))
        if doc is None:
            return ex.problem(400, "Send {\"kind\": jti|sub|consumer, \"value\": ...}.", request_id())
        try:
            lifted = await layer().revocation_store.lift(doc["kind"], str(doc["value"]))
        except ValueError as exc:
            return ex.problem(400, str(exc), request_id())
        except StateUnavailable:
            return ex.problem(503, "The state backend is unavailable.", request_id())
        _reply(ex, 200, {"lifted": lifted})

    return {("POST", "/ssf/events"): ssf_events, ("GET", "/revocations"): listing,
            ("POST", "/revocations"): revoke, ("POST", "/revocations/lift"): lift}


def _json_body(body: bytes, keys: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or any(k not in doc for k in keys):
        return None
    if "seconds" in keys and not isinstance(doc["seconds"], int | float):
        return None
    return doc


def _reply(ex: Exchange, status: int, doc: Any) -> None:
    ex.respond(status, [("content-type", "application/json"), ("cache-control", "no-store"),
                        ("x-request-id", request_id())], orjson.dumps(doc))
