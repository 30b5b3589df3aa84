"""The values a request carries through the pipeline: the request, the caller's identity and the decisions.

A stage reads the `RequestContext` and answers with a `Decision` value; a "no" is a value, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bastion.immutable import freeze_pure
from bastion.policy_ids import EXCEPTION, exception_of

_NO_NAMES: frozenset[str] = frozenset()


class Identity:
    """A verified caller. Built only by identity stages, never from client-sent headers. Immutable, compared by value.

    Not a frozen dataclass: a new token builds one, and the dataclass's generated `__init__` runs
    `object.__setattr__` per field even in the compiled build (~13 K instructions per new token; bench/RESULTS.md,
    "issue 17, fifth session"). The fields are `Final`, as in `ControlRecord`: mypy refuses an assignment, the
    compiled class has no setter for them, and the pure build refuses one (`bastion.immutable.freeze_pure`).
    """

    __slots__ = ("claims", "consumer", "credential_id", "issuer", "method", "roles", "scopes", "subject")

    def __init__(self, method: str, subject: str | None = None, consumer: str | None = None,
                 issuer: str | None = None, claims: dict[str, Any] | None = None,
                 scopes: frozenset[str] = _NO_NAMES, roles: frozenset[str] = _NO_NAMES,
                 credential_id: str | None = None) -> None:
        self.method: Final = method  # "jwt", "api_key", "mtls", "introspection", "anonymous"
        self.subject: Final = subject
        self.consumer: Final = consumer
        self.issuer: Final = issuer
        self.claims: Final[dict[str, Any]] = {} if claims is None else claims  # each identity its own when none
        self.scopes: Final = scopes
        self.roles: Final = roles
        self.credential_id: Final = credential_id  # jti, key id or certificate fingerprint; never the secret itself

    def _values(self) -> tuple[Any, ...]:
        return (self.method, self.subject, self.consumer, self.issuer, self.claims, self.scopes, self.roles,
                self.credential_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:  # as the frozen dataclass's: a TypeError while `claims` (a dict) is in the tuple
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"Identity(method={self.method!r}, subject={self.subject!r}, consumer={self.consumer!r}, "
                f"issuer={self.issuer!r}, claims={self.claims!r}, scopes={self.scopes!r}, roles={self.roles!r}, "
                f"credential_id={self.credential_id!r})")


freeze_pure(Identity)  # the pure build refuses what the compiled class cannot do


@dataclass(frozen=True, slots=True)
class Continue:
    """The stage allows the request to go on to the next stage."""

    policy_id: str = ""
    exception_id: str | None = None

    def __post_init__(self) -> None:
        # an allow decided by a value an exception set names that exception, whoever built the decision
        if self.exception_id is None and self.policy_id.startswith(EXCEPTION):
            object.__setattr__(self, "exception_id", exception_of(self.policy_id))


@dataclass(frozen=True, slots=True)
class Deny:
    """The stage refuses the request.

    `reason` is a stable snake_case code shared by the audit event and the metric label (never shown to the
    client beyond the status); `detail` is a safe sentence for the problem document; `log_detail` is the full
    reason for the operator's audit event.
    """

    status: int
    reason: str
    policy_id: str
    detail: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    log_detail: str | None = None
    close: bool = False

    def __post_init__(self) -> None:
        # a "no" is never a success: a 2xx (or 1xx/3xx) deny would let a client read a refusal as an answer
        if not 400 <= self.status <= 599:
            raise ValueError(f"a Deny needs a 4xx or 5xx status, not {self.status} ({self.reason})")


@dataclass(frozen=True, slots=True)
class NotResponsible:
    """An authenticator saw no credential of its kind: the next authenticator may try."""


Decision = Continue | Deny

CONTINUE = Continue()


class ControlRecord:
    """What one control decided for one request, for the audit event and metrics. Immutable, compared by value.

    Not a frozen dataclass: a request builds one per deciding control, and the dataclass's generated `__init__`
    runs `object.__setattr__` per field even in the compiled build (~7.5 K instructions a record, against ~0.3 K
    here; bench/RESULTS.md). The fields are `Final`: mypy refuses an assignment, the compiled class (mypyc) has
    no setter for them, and the pure build refuses one (`bastion.immutable.freeze_pure`).
    """

    __slots__ = ("control", "exception_id", "outcome", "policy_id", "reason")

    def __init__(self, control: str, outcome: str, policy_id: str, reason: str = "",
                 exception_id: str | None = None) -> None:
        self.control: Final = control
        self.outcome: Final = outcome  # "allow", "deny", "waived", "detect", "flag"
        self.policy_id: Final = policy_id
        self.reason: Final = reason
        self.exception_id: Final = exception_id

    def _values(self) -> tuple[str, str, str, str, str | None]:
        return self.control, self.outcome, self.policy_id, self.reason, self.exception_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ControlRecord):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"ControlRecord(control={self.control!r}, outcome={self.outcome!r}, policy_id={self.policy_id!r}, "
                f"reason={self.reason!r}, exception_id={self.exception_id!r})")


freeze_pure(ControlRecord)  # the pure build refuses what the compiled class cannot do


class RequestContext:
    """Everything a stage may read about one request, and the few things stages hand to later stages.

    Mutable only in the fields stages fill in (`identity`, `path_params` is set by the router); the request's own
    values never change once parsed.
    """

    __slots__ = (
        "api",
        "body",
        "client_ip",
        "drop_query_params",
        "drop_upstream_headers",
        "finalizers",
        "headers",
        "host",
        "identity",
        "method",
        "path",
        "path_params",
        "peer_cert",
        "query",
        "raw_target",
        "records",
        "request_id",
        "response_headers",
        "route",
        "start",
        "tls",
        "upstream_headers",
    )

    def __init__(
        self,
        *,
        method: str,
        raw_target: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        client_ip: str,
        request_id: str,
        start: float,
        tls: bool = False,
        peer_cert: bytes | None = None,
        host: str = "",
    ) -> None:
        self.method = method
        self.raw_target = raw_target
        self.path = path
        self.query = query
        # lower-cased names, in order; identity headers from the client are already stripped
        self.headers = headers
        self.client_ip = client_ip
        self.request_id = request_id
        self.start = start
        self.tls = tls
        self.peer_cert = peer_cert  # DER of a verified client certificate
        self.host = host  # the target's host (absolute-form authority, else Host), lower-case, without port
        self.api = ""
        self.route = ""
        self.path_params: dict[str, str] = {}
        self.identity: Identity | None = None
        self.body: bytes | None = None  # only when a stage asked for the body to be buffered
        self.records: list[ControlRecord] = []
        self.upstream_headers: list[tuple[str, str]] = []  # set by stages, sent upstream only
        self.response_headers: list[tuple[str, str]] = []  # set by stages, sent to the client
        self.drop_upstream_headers: set[str] = set()  # e.g. the credential, once verified
        self.drop_query_params: set[str] = set()  # e.g. `access_token`, when a route allows query credentials
        self.finalizers: list[Callable[[int], None]] = []  # called once with the final status (release slots)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]
