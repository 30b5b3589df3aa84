"""Real-time revocation: a deny list of token ids (`jti`), subjects and consumers, each until a given time.

`StateRevocationList` keeps the list in the shared state backend (`services.state`): with Redis every worker
and every gateway instance sees a revocation from its next request on; with the memory backend it serves one
process and survives config reloads. `MemoryRevocationList` is the backend-free list of the unit tests.

One record per (kind, value) holds two independent parts, so an administrator's block and a CAEP event never
shorten each other:

- an unconditional part: denied until `until`;
- a conditional part: credentials issued before `issued_before` are denied until `until` (a user who logs in
  again after a `session-revoked` event is not locked out).

Writes merge atomically (each part keeps the later `until`; the conditional part the later `issued_before`).
A lookup is one round trip (Redis MGET of at most three keys). A backend that cannot answer raises
`StateUnavailable`: the identity stage fails closed.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from operator import methodcaller
from typing import Any, Literal, Protocol

from bastion.state import StateUnavailable

Kind = Literal["jti", "sub", "consumer"]
KINDS: tuple[Kind, ...] = ("jti", "sub", "consumer")
MAX_VALUE = 1024  # longer values are refused on write, and so never looked up


class RevocationList(Protocol):
    """What the identity stage asks on every request, cached token or not."""

    async def is_revoked(self, jti: str | None, sub: str | None, consumer: str | None,
                         issued_at: float | None = None) -> bool: ...

    async def find(self, jti: str | None, sub: str | None, consumer: str | None,
                   issued_at: float | None = None) -> Revocation | None:
        """The record that denies this credential (its `source` says who and why), or None."""
        ...

    async def revoke(self, kind: Kind, value: str, until: float, *,
                     issued_before: float | None = None) -> object:
        """Deny `value` until the wall-clock time `until`. With `issued_before`, only credentials issued
        before that instant are denied (a new login after a CAEP `session-revoked` works again)."""
        ...


class MemoryRevocationList:
    """An in-process deny list without a state backend; expired entries are dropped when looked up or when
    the list grows."""

    def __init__(self, wall_clock: Callable[[], float] = time.time, max_entries: int = 1_000_000) -> None:
        self._now = wall_clock
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, float | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def revoke(self, kind: Kind, value: str, until: float, *,
                     issued_before: float | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown revocation kind {kind!r}")
        key = (kind, value)
        old = self._entries.get(key)
        if old is not None and old[0] > until and old[1] is None:
            return  # a longer unconditional revocation already holds
        self._entries[key] = (until, issued_before)
        if len(self._entries) > self._max:
            self.prune()

    def prune(self) -> None:
        now = self._now()
        for key in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]

    def _hit(self, kind: str, value: str | None, issued_at: float | None, now: float) -> bool:
        if value is None:
            return False
        entry = self._entries.get((kind, value))
        if entry is None:
            return False
        until, issued_before = entry
        if until <= now:
            del self._entries[(kind, value)]
            return False
        return issued_before is None or issued_at is None or issued_at < issued_before

    async def is_revoked(self, jti: str | None, sub: str | None, consumer: str | None,
                         issued_at: float | None = None) -> bool:
        if not self._entries:
            return False
        now = self._now()
        return (self._hit("jti", jti, issued_at, now) or self._hit("sub", sub, issued_at, now)
                or self._hit("consumer", consumer, issued_at, now))

    async def find(self, jti: str | None, sub: str | None, consumer: str | None,
                   issued_at: float | None = None) -> Revocation | None:
        now = self._now()
        for kind, value in (("jti", jti), ("sub", sub), ("consumer", consumer)):
            if value is not None and self._hit(kind, value, issued_at, now):
                until, before = self._entries[(kind, value)]
                return Revocation(kind, value, None if before is not None else until,
                                  until if before is not None else None, before)
        return None


# --- the record and its merge rule ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of the deny list, as stored and as listed by the admin API.

    `until` is the unconditional part (None: none); `conditional_until`/`issued_before` the conditional part.
    `changed` is the wall time of the last write and `source` who wrote it (`admin`, `ssf:<transmitter>`).
    """

    kind: str
    value: str
    until: float | None = None
    conditional_until: float | None = None
    issued_before: float | None = None
    changed: float = 0.0
    source: str = ""

    @property
    def expires(self) -> float:
        """When the whole record can be forgotten."""
        return max(self.until or 0.0, self.conditional_until or 0.0)

    def denies(self, issued_at: float | None, now: float) -> bool:
        """RFC 9493 subjects and CAEP: a credential of unknown issue time counts as issued before the event."""
        if self.until is not None and self.until > now:
            return True
        if self.conditional_until is None or self.conditional_until <= now or self.issued_before is None:
            return False
        return issued_at is None or issued_at < self.issued_before

    def merged(self, new: Revocation) -> Revocation:
        """The union of `self` and `new` (exact for each part; for two conditional writes the later
        `issued_before` and the later `until` are kept, which is exact when until = event time + lifetime)."""
        return Revocation(
            self.kind, self.value, _later(self.until, new.until), _later(self.conditional_until,
            new.conditional_until), _later(self.issued_before, new.issued_before), new.changed, new.source)

    def encode(self) -> str:
        return " ".join((_num(self.until), _num(self.conditional_until), _num(self.issued_before),
                         repr(float(self.changed)), self.source.replace(" ", "_") or "-"))

    @classmethod
    def decode(cls, kind: str, value: str, text: str) -> Revocation:
        parts = text.split(" ", 4)
        if len(parts) != 5:
            raise ValueError(f"bad revocation record {text[:80]!r}")
        until, cond, before, changed, source = parts
        return cls(kind, value, _float(until), _float(cond), _float(before), float(changed),
                   "" if source == "-" else source)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for `GET /revocations` and `bastion revocations list`."""
        return asdict(self)


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _num(value: float | None) -> str:
    return "-" if value is None else repr(float(value))


def _float(text: str) -> float | None:
    return None if text == "-" else float(text)


# --- storage: one small adapter per state backend -----------------------------------------------------------


class _Records(Protocol):
    @property
    def empty(self) -> bool:
        """Known to hold nothing (no lookup needed); always False where others may write."""

    async def get(self, keys: Sequence[str]) -> list[str | None]: ...
    async def merge(self, key: str, record: Revocation, now: float) -> None: ...
    async def put_new(self, key: str, until: float, now: float) -> bool: ...
    async def delete(self, key: str) -> bool: ...
    async def scan(self, prefix: str, limit: int) -> list[tuple[str, str]]: ...


class _MemoryRecords:
    """Records of one `MemoryState`: plain dict operations, atomic because nothing awaits in between."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}  # key -> (encoded record, expires)
        self._next_sweep = 0.0

    @property
    def empty(self) -> bool:
        return not self._data

    def _sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self._next_sweep = now + 10.0
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    async def get(self, keys: Sequence[str]) -> list[str | None]:
        data = self._data
        return [entry[0] if (entry := data.get(k)) is not None else None for k in keys]

    async def merge(self, key: str, record: Revocation, now: float) -> None:
        self._sweep(now)
        old = self._data.get(key)
        if old is not None and old[1] > now:
            record = Revocation.decode(record.kind, record.value, old[0]).merged(record)
        if record.expires <= now:
            self._data.pop(key, None)
        else:
            self._data[key] = (record.encode(), record.expires)

    async def put_new(self, key: str, until: float, now: float) -> bool:
        self._sweep(now)
        old = self._data.get(key)
        if old is not None and old[1] > now:
            return False
        self._data[key] = ("1", until)
        return True

    async def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    async def scan(self, prefix: str, limit: int) -> list[tuple[str, str]]:
        return [(k, v) for k, (v, _) in self._data.items() if k.startswith(prefix)][:limit]


# KEYS[1] record; ARGV: until, conditional until, issued before, changed, source, now (all "-" when absent).
# Each part keeps the later value; the key lives until the later of the two parts.
_MERGE = """
local function later(a, b)
  if a == '-' then return b end
  if b == '-' then return a end
  if tonumber(a) >= tonumber(b) then return a end
  return b
end
local u, cu, cb = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('GET', KEYS[1])
if old then
  local ou, ocu, ocb = string.match(old, '^(%S+) (%S+) (%S+) ')
  if ou then u, cu, cb = later(u, ou), later(cu, ocu), later(cb, ocb) end
end
local expires = tonumber(later(u == '-' and '0' or u, cu == '-' and '0' or cu))
local ttl = math.floor((expires - tonumber(ARGV[6])) * 1000)
if ttl <= 0 then redis.call('DEL', KEYS[1]) return 0 end
redis.call('SET', KEYS[1], u .. ' ' .. cu .. ' ' .. cb .. ' ' .. ARGV[4] .. ' ' .. ARGV[5], 'PX', ttl)
return 1
"""


class _RedisRecords:
    """Records in Redis under the backend's key prefix, through its deadline and fail-fast wrapper."""

    empty = False  # other gateways write here: always ask

    def __init__(self, state: Any) -> None:
        self._state = state
        self._prefix: str = state.prefix

    async def _call(self, operation: Callable[[Any], Any]) -> Any:
        return await self._state._call(operation)  # the backend's timeouts and StateUnavailable mapping

    async def get(self, keys: Sequence[str]) -> list[str | None]:
        names = [self._prefix + k for k in keys]
        # a cluster's MGET must stay in one slot: its client splits the keys by slot instead
        raw = await self._call(functools.partial(_mget, names=names))
        return [None if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in raw]

    async def merge(self, key: str, record: Revocation, now: float) -> None:
        name = self._prefix + key
        parts = record.encode().split(" ", 4)
        await self._call(lambda redis: redis.eval(_MERGE, 1, name, *parts, repr(float(now))))

    async def put_new(self, key: str, until: float, now: float) -> bool:
        ttl_ms = int((until - now) * 1000)
        if ttl_ms <= 0:
            return True
        name = self._prefix + key
        return bool(await self._call(lambda redis: redis.set(name, "1", px=ttl_ms, nx=True)))

    async def delete(self, key: str) -> bool:
        name = self._prefix + key
        return bool(await self._call(lambda redis: redis.delete(name)))

    async def scan(self, prefix: str, limit: int) -> list[tuple[str, str]]:
        pattern = _glob_escape(self._prefix + prefix) + "*"
        names: list[bytes] = []
        cursor = 0
        if getattr(self._state, "cluster", False):  # every primary's keys, page by page
            async def every(redis: Any) -> list[bytes]:
                return [name async for name in redis.scan_iter(match=pattern, count=500)][:limit]
            names = await self._call(every)
        while not getattr(self._state, "cluster", False) and len(names) < limit:  # a page per round trip
            cursor, page = await self._call(methodcaller("scan", cursor, match=pattern, count=500))
            names.extend(page)
            if int(cursor) == 0:
                break
        names = names[:limit]
        out: list[tuple[str, str]] = []
        for start in range(0, len(names), 500):
            batch = names[start:start + 500]
            values = await self._call(functools.partial(_mget, names=batch))
            for name, value in zip(batch, values, strict=True):
                if value is not None:
                    out.append((name.decode()[len(self._prefix):], value.decode()))
        return out


def _mget(redis: Any, names: list[str] | list[bytes]) -> Any:
    """MGET; a cluster's client splits the keys by slot instead (a cluster MGET must stay in one slot)."""
    return getattr(redis, "mget_nonatomic", redis.mget)(names)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# One record set per in-memory backend, living exactly as long as that backend (and so across reloads).
_MEMORY: weakref.WeakKeyDictionary[Any, _MemoryRecords] = weakref.WeakKeyDictionary()


def records_for(state: Any) -> _Records:
    """The revocation records of a state backend: Redis keys, or a dict tied to a `MemoryState`."""
    own = getattr(state, "revocation_records", None)
    if own is not None:  # a backend that keeps them itself (the workers' supervisor)
        return own()  # type: ignore[no-any-return]
    if getattr(state, "name", None) == "redis":
        return _RedisRecords(state)
    if getattr(state, "name", None) == "memory":
        records = _MEMORY.get(state)
        if records is None:
            records = _MEMORY[state] = _MemoryRecords()
        return records
    raise TypeError(f"no revocation storage for state backend {state!r}")


# --- the shared deny list ---------------------------------------------------------------------------------


class StateRevocationList:
    """The deny list in the shared state backend. Implements `RevocationList`, plus the admin operations
    `list_revocations`, `lift` and `remember_once` (the SET receiver's replay check).

    Every call may raise `StateUnavailable` (Redis down or slow): callers fail closed.
    """

    PREFIX = "rev:"

    def __init__(self, state: Any, wall_clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self._records = records_for(state)
        self._now = wall_clock

    @staticmethod
    def _key(kind: str, value: str) -> str:
        return f"{StateRevocationList.PREFIX}{kind}:{value}"

    async def revoke(self, kind: Kind, value: str, until: float, *, issued_before: float | None = None,
                     source: str = "admin") -> Revocation:
        """Deny `value` until `until` (wall time); only credentials issued before `issued_before` if given.
        Returns the record as it now stands (merged with any earlier one)."""
        if kind not in KINDS:
            raise ValueError(f"unknown revocation kind {kind!r}: use one of {', '.join(KINDS)}")
        if not value or len(value) > MAX_VALUE:
            raise ValueError(f"a revoked {kind} must be 1 to {MAX_VALUE} characters")
        if not math.isfinite(until) or (issued_before is not None and not math.isfinite(issued_before)):
            raise ValueError("until and issued_before must be finite wall-clock times")
        now = self._now()
        if issued_before is None:
            record = Revocation(kind, value, until=float(until), changed=now, source=source)
        else:
            record = Revocation(kind, value, conditional_until=float(until), issued_before=float(issued_before),
                                changed=now, source=source)
        key = self._key(kind, value)
        await self._records.merge(key, record, now)
        [text] = await self._records.get([key])
        return Revocation.decode(kind, value, text) if text is not None else record

    async def is_revoked(self, jti: str | None, sub: str | None, consumer: str | None,
                         issued_at: float | None = None) -> bool:
        return await self.find(jti, sub, consumer, issued_at) is not None

    @property
    def nothing_revoked(self) -> bool:
        """Known to hold no record (this process's memory store, empty): `find` would answer None without an await."""
        return self._records.empty

    async def find(self, jti: str | None, sub: str | None, consumer: str | None,
                   issued_at: float | None = None) -> Revocation | None:
        if self._records.empty:  # nothing revoked in this process's store: the common case, no await
            return None
        asked = [(kind, value) for kind, value in (("jti", jti), ("sub", sub), ("consumer", consumer))
                 if value and len(value) <= MAX_VALUE]
        if not asked:
            return None
        texts = await self._records.get([self._key(k, v) for k, v in asked])
        now = self._now()
        for (kind, value), text in zip(asked, texts, strict=True):
            if text is not None:
                record = Revocation.decode(kind, value, text)
                if record.denies(issued_at, now):
                    return record
        return None

    async def lift(self, kind: Kind, value: str) -> bool:
        """Remove both parts of the revocation of `value`; False when there was none."""
        if kind not in KINDS:
            raise ValueError(f"unknown revocation kind {kind!r}: use one of {', '.join(KINDS)}")
        return await self._records.delete(self._key(kind, value))

    async def list_revocations(self, limit: int = 10_000) -> list[Revocation]:
        """The entries still in force (at most `limit`), most recently changed first."""
        now = self._now()
        out = []
        for key, text in await self._records.scan(self.PREFIX, limit):
            kind, _, value = key[len(self.PREFIX):].partition(":")
            try:
                record = Revocation.decode(kind, value, text)
            except ValueError:
                continue
            if record.expires > now:
                out.append(record)
        return sorted(out, key=lambda r: -r.changed)

    async def remember_once(self, namespace: str, value: str, until: float) -> bool:
        """True the first time `namespace`/`value` is seen before `until`, False for a repeat (atomic across
        instances with Redis: SET NX)."""
        return await self._records.put_new(f"seen:{namespace}:{value}", until, self._now())

    async def forget(self, namespace: str, value: str) -> None:
        await self._records.delete(f"seen:{namespace}:{value}")


__all__ = [
    "KINDS",
    "Kind",
    "MemoryRevocationList",
    "Revocation",
    "RevocationList",
    "StateRevocationList",
    "StateUnavailable",
]
