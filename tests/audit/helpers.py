"""Shared test machinery for the audit tests: request contexts and decisions of every kind."""

from __future__ import annotations

from bastion.context import ControlRecord, Deny, Identity, RequestContext


def context(method: str = "GET", path: str = "/orders/42", *, ip: str = "203.0.113.9",
            identity: Identity | None = None, records: tuple[ControlRecord, ...] = (),
            headers: list[tuple[str, str]] | None = None, route: str = "get-order", api: str = "orders",
            params: dict[str, str] | None = None, query: str = "", start: float = 1_800_000_000.0,
            request_id: str = "req-1") -> RequestContext:
    ctx = RequestContext(method=method, raw_target=path + (f"?{query}" if query else ""), path=path, query=query,
                         headers=headers or [("host", "api.example.com"), ("user-agent", "curl/8")],
                         client_ip=ip, request_id=request_id, start=start)
    ctx.api, ctx.route = api, route
    ctx.path_params = params if params is not None else {"order_id": path.rsplit("/", 1)[-1]}
    ctx.identity = identity
    ctx.records.extend(records)
    return ctx


ALICE = Identity(method="jwt", subject="alice", consumer="web-app", issuer="https://idp.test",
                 credential_id="jti-1")


def auth_deny(reason: str, status: int = 401) -> tuple[ControlRecord, Deny]:
    policy = "class:partner/orders/get-order/identity.methods"
    return (ControlRecord("identity", "deny", policy, reason),
            Deny(status, reason, policy, log_detail=f"{reason}: token rejected"))


def deny(control: str, reason: str, status: int) -> tuple[ControlRecord, Deny]:
    policy = f"class:partner/orders/get-order/{control}"
    return ControlRecord(control, "deny", policy, reason), Deny(status, reason, policy, log_detail=reason)
