"""The Shared Signals receiver: CAEP / RISC Security Event Tokens (RFC 8417) pushed over HTTP (RFC 8935).

A SET is accepted only when every check passes, in this order (the first failure answers):

1. `Content-Type: application/secevent+jwt`, at most `max_bytes`, a compact JWS (RFC 8935 §2);
2. the JOSE header rules shared with access tokens (`jose.py`): no `alg: none`, no `crit`/`b64`, no
   key-locating header (`jku`, `x5u`, `jwk`, `x5c`; RFC 8725 §3.10), a short string `kid`; and
   `typ: secevent+jwt` (RFC 8417 §2.3, so an access token or ID token is never taken for a SET);
3. `iss` exactly a configured transmitter; its `Authorization` header when one is configured;
4. `alg` in the transmitter's allowlist, a key of its JWKS that fits the `alg`, a valid signature;
5. `aud` names this receiver; `iat` present, not in the future, not older than `max_age`; `exp` (optional)
   not passed; `jti` present and never seen before (remembered in the state backend, so a SET replayed to
   another gateway instance is refused too); `events` an object of objects.

Then each revoking event (`session-revoked`, `credential-change`, RISC `sessions-revoked` by default) denies
its subject's credentials issued before the event, until now + the longest token lifetime. Answers follow
RFC 8935 §2.2-2.3: 202 with an empty body, or 400 with `{"err": ..., "description": ...}`; 503 when the
keys or the state backend are unavailable, so that the transmitter retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from bastion.stages.identity.challenge import StepUp
from bastion.stages.identity.config import SsfTransmitterConfig
from bastion.stages.identity.jose import FORBIDDEN_HEADERS, check_header, check_typ
from bastion.stages.identity.jwks import JwksCache, JwksUnavailable
from bastion.stages.identity.jwt import string_set
from bastion.stages.identity.metrics import IdentityMetrics, identity_metrics
from bastion.stages.identity.revocation import RevocationList, StateRevocationList
from bastion.state import StateUnavailable

log = logging.getLogger("bastion.identity.ssf")

CONTENT_TYPE = "application/secevent+jwt"
DEFAULT_REVOKE_FOR = 86400.0


_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_MAX_ID = 256
_SET_TYP = frozenset({"secevent+jwt"})  # RFC 8417 §2.3: explicit typing keeps SETs and other JWTs apart
# A refused JOSE header (jose.check_header / check_typ) -> the RFC 8935 §2.3 error code of the answer.
_HEADER_ERRORS = {"alg_missing": "invalid_key", "alg_none": "invalid_key", "crit": "invalid_request",
                  "b64": "invalid_request", **dict.fromkeys(FORBIDDEN_HEADERS, "invalid_key"),
                  "kid": "invalid_request", "typ": "invalid_request", "typ_missing": "invalid_request"}


class SetRejected(Exception):
    """A SET that is refused. `err` is the RFC 8935 §2.3 error code, `description` a sentence for the
    transmitter (it never contains secrets)."""

    def __init__(self, err: str, description: str, status: int = 400, rule: str = "") -> None:
        super().__init__(f"{err}: {description}")
        self.err = err
        self.description = description
        self.status = status
        self.rule = rule  # the JOSE header rule that refused the SET (`jose.HeaderFault.rule`), if one did


@dataclass(frozen=True, slots=True)
class Action:
    """One subject denied because of one event."""

    event: str
    subject: str
    issued_before: float
    until: float
    step_up: StepUp | None = None  # a step-up event: the client is told to re-authenticate (RFC 9470)


@dataclass(frozen=True, slots=True)
class ReceivedSet:
    """A verified SET and what was done with it."""

    transmitter: str
    jti: str
    events: tuple[str, ...]
    actions: tuple[Action, ...] = field(default=())
    ignored: tuple[str, ...] = field(default=())  # events that asked for nothing we can do, and why


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SetRejected("invalid_request", f"claim {name} is not a number")
    return float(value)


def _short_string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise SetRejected("invalid_request", f"{what} is not a string of 1 to {_MAX_ID} characters")
    return value


class Transmitter:
    """One configured transmitter: its keys and checks, prepared once per config load."""

    def __init__(self, config: SsfTransmitterConfig, jwks: JwksCache, revoke_for: float) -> None:
        self.config = config
        self.name = config.name
        self.jwks = jwks
        self.registry = JWSRegistry(algorithms=list(config.algorithms), strict_check_header=False)
        self.audiences = frozenset(config.audience)
        self.events = frozenset(config.events)
        self.subject_issuers = frozenset(config.subject_issuers)
        self.revoke_for = config.revoke_for if config.revoke_for is not None else revoke_for
        self.authorization: str | None = None
        if config.authorization is not None:  # loaded with the config
            self.authorization = config.authorization.value()
        elif config.authorization_env is not None:
            value = os.environ.get(config.authorization_env)
            if not value:
                raise ValueError(f"providers.ssf {config.name}: environment variable "
                                 f"{config.authorization_env} is not set")
            self.authorization = value

    def subjects(self, sub_id: Any) -> tuple[list[str], str]:
        """RFC 9493 Subject Identifier -> the `sub` values it names, and why none when empty."""
        if not isinstance(sub_id, dict):
            raise SetRejected("invalid_request", "subject identifier is not an object")
        fmt = sub_id.get("format", sub_id.get("subject_type"))  # `subject_type`: CAEP drafts before SSF 1.0
        if fmt == "iss_sub":
            iss = _short_string(sub_id.get("iss"), "iss_sub.iss")
            sub = _short_string(sub_id.get("sub"), "iss_sub.sub")
            if self.subject_issuers and iss not in self.subject_issuers:
                raise SetRejected("access_denied", "this transmitter may not name subjects of that issuer")
            return [sub], ""
        if fmt == "opaque":
            return [_short_string(sub_id.get("id"), "opaque.id")], ""
        if fmt == "aliases":  # RFC 9493 §3.2.7: the same subject under several identifiers
            identifiers = sub_id.get("identifiers")
            if not isinstance(identifiers, list) or not identifiers or len(identifiers) > 20:
                raise SetRejected("invalid_request", "aliases.identifiers is not a list of 1 to 20 items")
            found: list[str] = []
            for item in identifiers:
                if isinstance(item, dict) and item.get("format") == "aliases":
                    raise SetRejected("invalid_request", "aliases may not nest")
                found += [s for s in self.subjects(item)[0] if s not in found]
            return found, "" if found else "no alias is a token subject"
        if fmt == "complex":  # SSF 1.0 §3.2: the user member names the subject
            user = sub_id.get("user")
            return self.subjects(user) if user is not None else ([], "complex subject without a user")
        if not isinstance(fmt, str):
            raise SetRejected("invalid_request", "subject identifier has no format")
        return [], f"subject format {fmt[:40]!r} does not name a token subject"


class SetReceiver:
    """Receives pushed SETs for the configured transmitters and revokes subjects in the shared deny list.

    `await handle(body, content_type, now, authorization=...)` -> `(status, body)` for the HTTP layer;
    `await receive(...)` -> `ReceivedSet` or raises `SetRejected` (for tests and other transports).
    """

    def __init__(
        self,
        transmitters: Iterable[SsfTransmitterConfig],
        revocations: RevocationList,
        seen: StateRevocationList,
        *,
        revoke_for: float = DEFAULT_REVOKE_FOR,
        monotonic: Callable[[], float] = time.monotonic,
        fetcher: Any = None,
        audit: Any = None,
        metrics: IdentityMetrics | None = None,
        resolve: Callable[[Path], Path] = lambda path: path,
    ) -> None:
        extra: dict[str, Any] = {"fetcher": fetcher} if fetcher is not None else {}
        self._metrics = metrics or identity_metrics(None)
        self.transmitters: dict[str, Transmitter] = {}
        for config in transmitters:
            cache = JwksCache(f"ssf:{config.name}", config.jwks_cache, jwks_uri=config.jwks_uri,
                              jwks_file=config.jwks_file and resolve(config.jwks_file), monotonic=monotonic,
                              metrics=self._metrics, **extra)
            self.transmitters[config.issuer] = Transmitter(config, cache, revoke_for)
        self._revocations = revocations
        self._seen = seen
        self._audit = audit
        self.max_bytes = max((t.config.max_bytes for t in self.transmitters.values()), default=65536)
        algorithms = sorted({a for t in self.transmitters.values() for a in t.config.algorithms})
        self._peek = JWSRegistry(algorithms=algorithms or ["ES256"], strict_check_header=False)
        self._peek.max_payload_length = self.max_bytes
        self._peek.max_header_length = 2048

    async def start(self) -> None:
        """Fetch each transmitter's keys once and keep them fresh (a failure only delays acceptance)."""
        for transmitter in self.transmitters.values():
            await transmitter.jwks.start()

    async def close(self) -> None:
        for transmitter in self.transmitters.values():
            await transmitter.jwks.close()

    # --- HTTP

    async def handle(self, body: bytes, content_type: str, now: float, *,
                     authorization: str | None = None) -> tuple[int, bytes]:
        """RFC 8935 §2.2: 202 and no body when accepted; 400 `{"err", "description"}` when refused."""
        try:
            received = await self.receive(body, content_type, now, authorization=authorization)
        except SetRejected as exc:
            rule = {"rule": exc.rule} if exc.rule else {}  # which JOSE header rule refused it, for the operator
            self._record(exc.err, None, {"err": exc.err, "description": exc.description, **rule})
            return exc.status, json.dumps({"err": exc.err, "description": exc.description}).encode()
        self._record("accepted", received, {})
        return 202, b""

    def _record(self, result: str, received: ReceivedSet | None, detail: dict[str, Any]) -> None:
        name = received.transmitter if received is not None else "unknown"  # a refused iss is not trusted
        self._metrics.ssf_sets.labels(name, result).inc()
        if received is not None:
            detail = {"transmitter": name, "jti": received.jti, "events": list(received.events),
                      "revoked": [a.subject for a in received.actions], "ignored": list(received.ignored)}
            log.info("SET %s from %s: revoked %s", received.jti, name, detail["revoked"])
        else:
            log.warning("SET refused: %s", detail.get("description"))
        if self._audit is not None:
            self._audit.admin("ssf.set", "success" if received is not None else "failure", **detail)

    # --- verification

    async def receive(self, body: bytes, content_type: str, now: float, *,
                      authorization: str | None = None) -> ReceivedSet:
        token = self._token(body, content_type)
        try:
            obj = jws.extract_compact(token.encode("ascii"), registry=self._peek)
            header = obj.headers()
            claims = json.loads(obj.payload)
        except (JoseError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise SetRejected("invalid_request", "the body is not a decodable JWS") from exc
        if not isinstance(claims, dict):
            raise SetRejected("invalid_request", "the SET payload is not a JSON object")
        self._check_header(header)
        iss = claims.get("iss")
        transmitter = self.transmitters.get(iss) if isinstance(iss, str) else None
        if transmitter is None:  # exact match, no normalisation
            raise SetRejected("invalid_issuer", "the SET issuer is not a configured transmitter")
        if transmitter.authorization is not None and not hmac.compare_digest(
                (authorization or "").encode(), transmitter.authorization.encode()):
            raise SetRejected("authentication_failed", "missing or wrong Authorization header", 401)
        await self._check_signature(transmitter, obj, header)
        jti, events = self._check_claims(transmitter, claims, now)
        actions, ignored = self._actions(transmitter, claims, events, now)
        # RFC 8417 §2.2 jti: remembered until the SET is too old anyway; a replay is refused everywhere
        remember_until = max(_number(claims, "iat") or now, now) + transmitter.config.max_age + \
            transmitter.config.leeway
        try:
            if not await self._seen.remember_once(f"set:{transmitter.name}", jti, remember_until):
                raise SetRejected("invalid_request", "this SET (jti) was already received")
        except StateUnavailable as exc:
            raise SetRejected("temporarily_unavailable", "state backend unavailable, retry later", 503) from exc
        try:
            for action in actions:
                await self._revoke(action, f"ssf:{transmitter.name}")
        except StateUnavailable as exc:
            try:  # let the transmitter's retry through: nothing (or not all) was applied
                await self._seen.forget(f"set:{transmitter.name}", jti)
            except StateUnavailable:
                log.error("SET %s from %s: revocation not stored and its jti not forgotten; a retry will be "
                          "refused as a replay", jti, transmitter.name)
            raise SetRejected("temporarily_unavailable", "state backend unavailable, retry later", 503) from exc
        return ReceivedSet(transmitter.name, jti, tuple(events), tuple(actions), tuple(ignored))

    async def _revoke(self, action: Action, source: str) -> None:
        if action.step_up is not None:
            source = action.step_up.source(source)
        if isinstance(self._revocations, StateRevocationList):  # records who revoked, for the admin list
            await self._revocations.revoke("sub", action.subject, action.until,
                                           issued_before=action.issued_before, source=source)
        else:
            await self._revocations.revoke("sub", action.subject, action.until,
                                           issued_before=action.issued_before)

    def _token(self, body: bytes, content_type: str) -> str:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != CONTENT_TYPE:  # RFC 8935 §2
            raise SetRejected("invalid_request", f"Content-Type must be {CONTENT_TYPE}")
        if len(body) > self.max_bytes:
            raise SetRejected("invalid_request", f"the SET is larger than {self.max_bytes} bytes")
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise SetRejected("invalid_request", "the body is not a compact JWS") from exc
        if token.count(".") == 4:
            raise SetRejected("invalid_request", "encrypted SETs are not supported")
        if not _JWS.match(token):
            raise SetRejected("invalid_request", "the body is not a compact JWS")
        return token

    @staticmethod
    def _check_header(header: dict[str, Any]) -> None:
        fault = check_header(header) or check_typ(header, _SET_TYP)  # the same rules as access tokens
        if fault is not None:
            raise SetRejected(_HEADER_ERRORS[fault.rule], fault.detail, rule=fault.rule)

    @staticmethod
    async def _check_signature(transmitter: Transmitter, obj: jws.CompactSignature,
                               header: dict[str, Any]) -> None:
        alg = header["alg"]
        if alg not in transmitter.config.algorithms:
            raise SetRejected("invalid_key", f"alg {alg[:20]} is not accepted from this transmitter")
        kid = header.get("kid")  # a string of 1 to MAX_KID characters, or absent (jose.check_header)
        try:
            keys = await transmitter.jwks.keys_for(kid, alg)
        except JwksUnavailable as exc:
            raise SetRejected("temporarily_unavailable", "transmitter keys unavailable, retry later",
                              503) from exc
        if not keys:
            raise SetRejected("invalid_key", "no key of the transmitter matches kid and alg")
        for key in keys:
            try:
                if jws.validate_compact(obj, key, registry=transmitter.registry):
                    return
            except JoseError:
                continue
        raise SetRejected("invalid_key", "the signature does not verify with the transmitter's keys")

    @staticmethod
    def _check_claims(transmitter: Transmitter, claims: dict[str, Any],
                      now: float) -> tuple[str, dict[str, dict[str, Any]]]:
        cfg = transmitter.config
        if not string_set(claims.get("aud"), split=False) & transmitter.audiences:
            raise SetRejected("invalid_audience", "the SET audience does not name this receiver")
        iat = _number(claims, "iat")
        if iat is None:
            raise SetRejected("invalid_request", "claim iat is missing")  # RFC 8417 §2.2: REQUIRED
        if iat > now + cfg.leeway:
            raise SetRejected("invalid_request", "iat is in the future")
        if iat < now - cfg.max_age:
            raise SetRejected("invalid_request", "the SET is older than this receiver accepts")
        exp = _number(claims, "exp")  # not required for SETs, honoured when present
        if exp is not None and now >= exp + cfg.leeway:
            raise SetRejected("invalid_request", "the SET has expired")
        jti = _short_string(claims.get("jti"), "jti")
        events = claims.get("events")
        if not isinstance(events, dict) or not events or len(events) > 20:
            raise SetRejected("invalid_request", "events is not an object of 1 to 20 events")
        for name, payload in events.items():
            if not isinstance(payload, dict):
                raise SetRejected("invalid_request", f"event {name[:120]} is not an object")
        return jti, events

    @staticmethod
    def _actions(transmitter: Transmitter, claims: dict[str, Any], events: dict[str, dict[str, Any]],
                 now: float) -> tuple[list[Action], list[str]]:
        actions: list[Action] = []
        ignored: list[str] = []
        for name, payload in events.items():
            step_up = _step_up(transmitter.config, payload) if name in transmitter.config.step_up_events else None
            if name not in transmitter.events and step_up is None:
                ignored.append(f"{name[:120]}: not a revoking event")
                continue
            # SSF 1.0: top-level sub_id; CAEP drafts: the event's `subject`; RFC 8417 §2.2: plain `sub`
            sub_id = claims.get("sub_id", payload.get("subject"))
            if sub_id is not None:
                subjects, why = transmitter.subjects(sub_id)
            elif isinstance(claims.get("sub"), str):
                subjects, why = [_short_string(claims["sub"], "sub")], ""
            else:
                raise SetRejected("invalid_request", f"event {name[:120]} names no subject")
            if not subjects:
                ignored.append(f"{name[:120]}: {why}")
                continue
            # CAEP event_timestamp, else RFC 8417 toe, else iat; never later than now
            when = _number(payload, "event_timestamp") or _number(claims, "toe") or _number(claims, "iat")
            issued_before = min(when if when is not None else now, now)
            until = now + transmitter.revoke_for
            actions += [Action(name, s, issued_before, until, step_up) for s in subjects]
        return actions, ignored


def _step_up(config: SsfTransmitterConfig, payload: dict[str, Any]) -> StepUp | None:
    """CAEP assurance-level-change: a decrease (or no direction) asks for the previous level again."""
    if payload.get("change_direction") == "increase":
        return None  # a stronger authentication than before: nothing to deny
    previous = payload.get("previous_level")
    acr = tuple(config.step_up_acr_values) or ((previous[:200],) if isinstance(previous, str) and previous else ())
    return StepUp(acr, config.step_up_max_age)


__all__ = ["CONTENT_TYPE", "ReceivedSet", "SetReceiver", "SetRejected"]
