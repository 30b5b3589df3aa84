"""What a reload swaps besides the routes: the audit sinks and spool, and the shared-state backend.

Two phases, like the routes (`Runtime.prepare` / `commit`, and across workers the supervisor's all or none):
- `prepare_swap` builds the new objects and refuses, naming the field, when one cannot serve: a sink without its
  token, an unwritable spool directory, a state backend that does not answer, tracing without its SDK. Nothing
  running changes.
- `commit_swap` is synchronous: events queued so far go to the current sinks, the next ones to the new; a sink
  kept by name keeps its backlog (memory and spool, in order; the spool directory moves with it); a removed sink
  delivers its backlog in the background, then stops. The new state backend serves the next request (the new
  layers were compiled against it); the old one is closed after `STATE_GRACE` seconds, once the requests that
  started on the old layers are done with it. A new tracer instruments the new routes; the old one is flushed.
- `settle_swap` (after a commit) and `abort_swap` (instead of one) close what `prepare_swap` built and nobody
  uses.

Blocks and revocations in force move with a backend change: `carry_state` copies them from the old backend to
the new one (blocks when the old backend can list them: memory, the supervisor's; revocations always), run
once by the process that serves the admin API. Rate-limit windows and detection counts start afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.audit.log import AuditLog
from bastion.config.models import GatewayConfig
from bastion.stages.base import Services

STATE_GRACE = 10.0  # seconds the old state backend stays open for requests that started before the swap
PING_TIMEOUT = 2.0
CARRY_LIMIT = 100_000  # revocations copied at a backend change (the admin API lists at most this many too)

StateFactory = Callable[[GatewayConfig], Any]
KEEP: Any = object()  # `Swap.tracing` when the tracing section did not change


class SwapRefused(Exception):
    """A new sink or state backend cannot serve: the reload is refused with this message."""


@dataclass(slots=True)
class Swap:
    """The objects a reload builds for the gateway-wide sections; None where nothing changed."""

    audit: AuditLog | None = None  # staged: the new sinks and spool settings
    state: Any = None  # the new state backend
    tracing: Any = KEEP  # the new tracer (None: tracing turned off), or KEEP

    def services(self, services: Services) -> Services:
        """The services the new config compiles against (its layers capture the state backend)."""
        return dataclasses.replace(services, state=self.state) if self.state is not None else services


def _delivery(gw: GatewayConfig) -> Any:
    audit = gw.audit
    return (audit.model_dump(mode="json", include={"sinks", "spool_dir", "spool_max_bytes",
                                                   "spool_segment_bytes", "queue_size"}))


def _state_key(gw: GatewayConfig) -> tuple[str, str | None]:
    ref = gw.state_password
    if ref is None:
        return gw.state, None
    try:
        return gw.state, ref.value()
    except Exception:  # not loaded (a section sent to `POST /config/check`): compare where it comes from
        return gw.state, ref.source


def swapped(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The gateway-wide sections a reload from `old` to `new` would swap (for `validate --against`)."""
    found = ["gateway.audit (sinks, spool)"] if _delivery(old) != _delivery(new) else []
    found += ["gateway.state"] if state_changed(old, new) else []
    return found + (["gateway.tracing"] if _tracing(old) != _tracing(new) else [])


def _tracing(gw: GatewayConfig) -> Any:
    return gw.tracing.model_dump(mode="json") if gw.tracing is not None else None


def state_changed(old: GatewayConfig, new: GatewayConfig) -> bool:
    """The backend URL or its password changed (a new password needs a new client: it authenticates once)."""
    return _state_key(old) != _state_key(new)


async def prepare_swap(old: GatewayConfig, new: GatewayConfig, services: Services, base: Path,
                       make_state: StateFactory) -> Swap:
    """Build what `new` needs that `old` does not have. Raises SwapRefused naming the field."""
    swap = Swap()
    if _delivery(old) != _delivery(new) and services.audit is not None:
        try:
            swap.audit = services.audit.staged(new.audit, base)
        except (OSError, ValueError) as exc:
            raise SwapRefused(f"gateway.audit.sinks: {exc}") from exc
    if _tracing(old) != _tracing(new):  # a private tracer provider per gateway: a new one replaces it
        from bastion.tracing import Tracing

        try:
            swap.tracing = Tracing.start(new.tracing)
        except (ValueError, ImportError) as exc:
            await abort_swap(swap)
            raise SwapRefused(f"gateway.tracing: {exc}") from exc
    if state_changed(old, new):
        state = make_state(new)
        ping = getattr(state, "ping", None)
        if ping is not None:
            try:
                async with asyncio.timeout(PING_TIMEOUT):
                    await ping()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await state.close()
                await abort_swap(swap)
                raise SwapRefused(f"gateway.state: the new backend does not answer ({exc}); the gateway keeps "
                                  "its current state backend") from exc
        swap.state = state
    return swap


def commit_swap(swap: Swap, services: Services) -> Any:
    """Serve the swapped objects from now on. Returns the state backend replaced (None if none), for
    `retire_state`."""
    if swap.audit is not None and services.audit is not None:
        services.audit.adopt(swap.audit)
    old_state = None
    if swap.state is not None:
        old_state, services.state = services.state, swap.state
        if services.blocks is not None:
            services.blocks.use_state(swap.state)
        if services.detector is not None:
            services.detector.share(swap.state)
    return old_state


async def settle_swap(swap: Swap, services: Services) -> None:
    """After `commit_swap`: close the staged sinks that went unused (a sink whose config did not change keeps
    the running one)."""
    if swap.audit is not None:
        await swap.audit.discard(services.audit)


async def close_tracing(tracing: Any) -> None:
    """Flush and stop a tracer that no longer serves (its exporter's shutdown blocks: run it in a thread)."""
    if tracing is not None and tracing is not KEEP:
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, tracing.close)


async def abort_swap(swap: Swap, keep: Any = None) -> None:
    """Close what `prepare_swap` built (never `keep`: the supervisor's embedded state, which outlives reloads)."""
    await close_tracing(swap.tracing)
    if swap.audit is not None:
        await swap.audit.discard()
    if swap.state is not None and swap.state is not keep:
        with contextlib.suppress(Exception):
            await swap.state.close()


async def retire_state(state: Any, keep: Any = None, grace: float = STATE_GRACE) -> None:
    """Close a replaced backend after `grace` seconds (never `keep`: the supervisor's embedded state)."""
    if state is None or state is keep:
        return
    try:
        await asyncio.sleep(grace)
    finally:  # also when the process stops before the grace is over
        with contextlib.suppress(Exception):
            await state.close()


async def carry_state(old: Any, new: Any) -> tuple[int, int]:
    """Copy the blocks and revocations in force from `old` to `new`. Returns (blocks, revocations) copied;
    a backend that fails midway leaves what was copied (the reload has been applied either way)."""
    from bastion.stages.identity.revocation import Revocation, StateRevocationList, records_for

    blocks = revocations = 0
    now = time.time()
    lister = getattr(old, "list_blocks", None)
    with contextlib.suppress(Exception):
        if lister is not None:
            for kind, key, until in await lister():
                await new.block(kind, key, until)
                blocks += 1
    with contextlib.suppress(Exception):
        source, target = records_for(old), records_for(new)
        prefix = StateRevocationList.PREFIX
        for key, text in await source.scan(prefix, CARRY_LIMIT):
            kind, _, value = key[len(prefix):].partition(":")
            with contextlib.suppress(ValueError, TypeError):  # a record this version cannot read stays behind
                await target.merge(key, Revocation.decode(kind, value, text), now)
                revocations += 1
    return blocks, revocations
