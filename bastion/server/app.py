"""The running gateway: load and compile the config, open listeners, reload, drain.

`serve --workers N` runs N of these as workers under `bastion.server.supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from bastion.audit.blocks import BlockList
from bastion.audit.detect import Detector
from bastion.audit.log import AuditLog
from bastion.compile import CompiledGateway, compile_config
from bastion.config.include import root_file
from bastion.config.loader import ConfigError, load_config
from bastion.config.secrets import load_cert_chain
from bastion.server.admin import AdminApi, AdminBackend, read_events
from bastion.server.admin_routes import block_routes, identity_routes
from bastion.server.dispatch import protocol_factory
from bastion.server.http1 import Http1Connection, ServerLimits
from bastion.server.http2 import H2Limits, H2Stats
from bastion.server.metrics import Metrics, exceptions_in_force
from bastion.server.probe_credentials import probe_credential_routes
from bastion.server.proxy import Gateway
from bastion.server.reload import check_routes
from bastion.server.reload_files import check_referenced_files
from bastion.server.settings import audit_file_path, make_admin_auth, server_limits
from bastion.server.tls import listener_ssl
from bastion.server.tls import resolve_path as _resolve
from bastion.stages.base import Services
from bastion.state import open_state


class Runtime:
    """One gateway process: the listeners, the compiled config and its reloads."""

    def __init__(self, config_path: str | Path, *, services: Services | None = None, worker: bool = False,
                 serve_admin: bool = True) -> None:
        self.config_path = root_file(Path(config_path))  # a config directory means its bastion.yaml
        self.services = services or Services()
        self.metrics = Metrics()
        if self.services.registry is None:  # identity counters land where /metrics reads
            self.services.registry = self.metrics.registry
        self.worker = worker
        self.serve_admin = serve_admin
        self.gateway: Gateway | None = None
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[Http1Connection] = set()
        self.admin_connections: set[Http1Connection] = set()
        self.bound: list[tuple[str, int]] = []  # actual (host, port) of each data-plane listener
        self.tls_contexts: list[ssl.SSLContext | None] = []  # one per listener, kept to reload certificates
        self.admin_bound: tuple[str, int] | None = None
        self._stopping = asyncio.Event()
        self._ready = False
        self._reload_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._drift: Any = None
        self._retired: list[CompiledGateway] = []
        self.limits: ServerLimits | None = None  # one object, read by every connection: a reload updates it
        self.audit_config: Any = None  # the audit section the detector was built from
        self._peer = "signal"
        self._probe: Any = None
        # the state backend of a gateway section (a worker without Redis: its supervisor's), and the swap a
        # prepared reload built for the gateway-wide sections (bastion.server.swap)
        self.make_state: Any = default_state
        self._swap: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- config -------------------------------------------------------------------------------------------

    async def _compile(self, loaded: Any = None, services: Services | None = None) -> CompiledGateway:
        loaded = loaded if loaded is not None else load_config(self.config_path)
        check_referenced_files(loaded)  # a missing or broken certificate, key, JWKS...: refused at its line
        compiled = compile_config(loaded, services or self.services)
        compiled.shared.admin_auth = make_admin_auth(compiled)  # started, reloaded and closed with the layers
        for shared in compiled.shared.lifecycle():
            await shared.start()
        return compiled

    async def _close_shared(self, compiled: CompiledGateway) -> None:
        for shared in compiled.shared.lifecycle():
            with contextlib.suppress(Exception):
                await shared.close()

    async def reload(self, peer: str = "signal") -> tuple[bool, str]:
        """Swap in the config on disk; a config that fails validation is refused and the old one keeps serving."""
        async with self._reload_lock:
            compiled, message = await self.prepare(peer)
            if compiled is None:
                return False, message
            self.commit(compiled)
            await self.settle()
            return True, message

    async def prepare(self, peer: str = "signal") -> tuple[CompiledGateway | None, str]:
        """Phase one of a reload: compile the config on disk and start its layers, without serving it yet.
        Returns the compiled config (to `commit` or `abort`), or None and the reason it was refused."""
        assert self.gateway is not None
        audit = self.services.audit
        from bastion.server.swap import SwapRefused, abort_swap, prepare_swap

        refusal = swap = compiled = None
        try:
            loaded = load_config(self.config_path)
            current = self.gateway.compiled.config.model.gateway
            from bastion.server.reload import restart_needed

            refusal = restart_needed(current, loaded.model.gateway)
            if refusal is None:  # the sinks and the state backend the new config needs, built, not serving
                swap = await prepare_swap(current, loaded.model.gateway, self.services, self.config_path.parent,
                                          self.make_state)
                compiled = await self._compile(loaded, swap.services(self.services))
        except ConfigError as exc:
            self.metrics.config_reloads.labels("refused").inc()
            audit.admin("config.reload", "failure", peer=peer, errors=[str(d) for d in exc.diagnostics])
            print(f"bastion: reload refused, still serving the previous config:\n{exc}", file=sys.stderr)
            return None, str(exc)
        except SwapRefused as exc:
            refusal = str(exc)
        except Exception as exc:
            if swap is not None:
                await abort_swap(swap)
            self.metrics.config_reloads.labels("refused").inc()
            audit.admin("config.reload", "failure", peer=peer, errors=[repr(exc)])
            return None, repr(exc)
        if refusal is None and compiled is not None:
            try:
                self._check_certificates(compiled)
            except (OSError, ssl.SSLError) as exc:
                refusal = f"TLS certificate: {exc}"
        if refusal is not None or compiled is None:
            if compiled is not None:
                await self._close_shared(compiled)
            if swap is not None:
                await abort_swap(swap)
            self.metrics.config_reloads.labels("refused").inc()
            audit.admin("config.reload", "failure", peer=peer, errors=[refusal])
            return None, str(refusal)
        self._swap = swap
        self._peer = peer
        return compiled, f"config {compiled.config_hash} loaded"

    def commit(self, compiled: CompiledGateway) -> None:
        """Phase two: serve `compiled` from the next request on (the previous config is closed by `settle`)."""
        assert self.gateway is not None
        self._reload_certificates(compiled)
        self._retired.append(self.gateway.compiled)
        from bastion.server.reload import apply_gateway_settings
        from bastion.server.swap import KEEP, carry_state, close_tracing, commit_swap, retire_state, settle_swap

        swap, self._swap = self._swap, None
        if swap is not None and swap.tracing is not KEEP:  # before install: it instruments the new routes
            self._background(close_tracing(self.gateway.tracing))
            self.gateway.tracing = swap.tracing
        self.gateway.install(compiled)
        old_state = commit_swap(swap, self.services) if swap is not None else None
        if swap is not None:
            self._background(settle_swap(swap, self.services))
        if old_state is not None:
            self._restart_probe()
            if self.serve_admin:  # the process that owns the gateway: blocks and revocations move with it
                self._background(carry_state(old_state, self.services.state))
            self._background(retire_state(old_state))
        apply_gateway_settings(self, compiled.config.model.gateway)
        self.metrics.config_reloads.labels("accepted").inc()
        self.services.audit.admin("config.reload", "success", peer=self._peer, config_hash=compiled.config_hash)

    async def abort(self, compiled: CompiledGateway) -> None:
        """A prepared config that another worker refused: close its layers, keep serving the current one."""
        await self._close_shared(compiled)
        swap, self._swap = self._swap, None
        if swap is not None:
            from bastion.server.swap import abort_swap

            await abort_swap(swap)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _restart_probe(self) -> None:
        """The readiness probe follows the state backend a reload swapped in."""
        from bastion.server.readiness import StateProbe

        if self._probe is not None:
            self._probe.stop()
        self._probe = StateProbe(self.services.state)
        self._probe.start()

    async def settle(self) -> None:
        """Close the configs retired by `commit` (their in-flight requests keep their own references)."""
        retired, self._retired = self._retired, []
        for old in retired:
            await self._close_shared(old)

    def _check_certificates(self, compiled: CompiledGateway) -> None:
        """Load every listener's new certificate into a scratch context: a bad one refuses the reload."""
        base = self.config_path.parent
        for listener in compiled.config.model.gateway.listeners:
            if listener.tls is not None:
                scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                load_cert_chain(scratch, _resolve(base, listener.tls.cert), listener.tls.key, base)

    def _reload_certificates(self, compiled: CompiledGateway) -> None:
        """New certificates and keys serve the next handshakes; listener addresses change only on restart."""
        base = self.config_path.parent
        for context, listener in zip(self.tls_contexts, compiled.config.model.gateway.listeners, strict=False):
            if context is not None and listener.tls is not None:
                load_cert_chain(context, _resolve(base, listener.tls.cert), listener.tls.key, base)

    def ready(self) -> bool:
        """Listening, and every dependency the routes need is there (see `readiness`)."""
        return not self.readiness()

    def readiness(self) -> list[str]:
        """Why this process is not ready (empty when it is): not listening yet, a layer without its remote
        material (JWKS never fetched), or the shared state backend down."""
        from bastion.server.readiness import reasons

        return reasons(self._ready, self.gateway, self.services.state)

    async def _readiness(self) -> dict[str, Any]:
        found = self.readiness()
        self._readiness_gauge.set(found)
        return {"reasons": found, **self.info()}

    def info(self) -> dict[str, Any]:
        gateway = self.gateway
        if gateway is None:
            return {"config_hash": None}
        compiled = gateway.compiled
        return {"config_hash": compiled.config_hash, "loaded_at": compiled.loaded_at,
                "config_file": str(self.config_path.resolve()), "routes": len(compiled.routes), "pid": os.getpid()}

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = load_config(self.config_path)
        gw = loaded.model.gateway
        base = self.config_path.parent
        if self.services.audit is None:
            self.services.audit = AuditLog.from_config(gw.audit, base, registry=self.metrics.registry)
        if self.services.state is None:  # shared limits, blocks and revocations; a reload may swap it
            self.services.state = self.make_state(gw)
        services = self.services
        if services.blocks is None:  # detections and their responses, shared through the state backend
            services.blocks = BlockList(services.state, audit=services.audit)
            services.detector = Detector.from_config(gw.audit, services.audit, services.blocks, base)
            services.detector.share(services.state)  # counts across workers and nodes (Redis, supervisor)
        blocks = services.blocks
        await self.services.audit.start()
        compiled = await self._compile()
        self.gateway = Gateway(compiled, self.services, self.metrics)
        limits = self.limits = server_limits(gw)
        self.audit_config = gw.audit
        loop = asyncio.get_running_loop()
        gateway = self.gateway
        h2_stats = H2Stats(self.metrics.registry)
        h2_limits = H2Limits.derive(limits, **gw.http2.model_dump())
        for listener in gw.listeners:
            context = listener_ssl(listener, base)
            http2 = context is not None and listener.http2
            if http2 or listener.h2c:  # one port, both protocols: ALPN or the h2c preface decides
                factory = protocol_factory(gateway.handle, limits, self.connections, gateway.on_protocol_error,
                                           h2c=listener.h2c, h2_limits=h2_limits, stats=h2_stats)
            else:
                def factory() -> Http1Connection:
                    return Http1Connection(gateway.handle, limits, self.connections, gateway.on_protocol_error)
            server = await loop.create_server(factory, listener.address, listener.port, ssl=context,
                                              reuse_port=self.worker, backlog=1024)
            self.servers.append(server)
            self.bound.append(server.sockets[0].getsockname()[:2])
            self.tls_contexts.append(context)
        if gw.admin.enabled and self.serve_admin:
            admin = AdminApi(AdminBackend(
                registry=self.metrics.registry, ready=self.ready, info=self.info, reload=self.reload,
                compiled=lambda: gateway.compiled,
                events=lambda: read_events(audit_file_path(gateway.compiled.config.model.gateway, base)),
                auth=lambda: gateway.compiled.shared.admin_auth, audit=self.services.audit,
                blocks=blocks.list_blocks, before_scrape=self._scrape, clock=self.services.wall_clock,
                readiness=self._readiness, refused=lambda reason: self.metrics.decision("admin", "deny", reason),
                extra_routes={**block_routes(blocks), **identity_routes(lambda: gateway.compiled),
                              **check_routes(lambda: gateway.compiled.config.model.gateway),
                              **probe_credential_routes(lambda: gateway.compiled.shared.identity)},
            ))
            admin_tls = listener_ssl(gw.admin, base) if gw.admin.tls is not None else None
            server = await loop.create_server(
                lambda: Http1Connection(admin.handle, limits, self.admin_connections),
                gw.admin.address, gw.admin.port, ssl=admin_tls,
            )
            self.servers.append(server)
            self.admin_bound = server.sockets[0].getsockname()[:2]
        if gw.drift is not None and self.serve_admin:  # one watch per gateway: the process that serves admin
            from bastion.posture.drift import DriftWatch

            self._drift = DriftWatch.from_config(gw.drift, base, lambda: gateway.compiled, self.services.audit,
                                                 self.metrics.registry)
            await self._drift.start()
        if not self.serve_admin:  # a worker: its supervisor reads the metrics files, keep them current
            self._flusher = loop.create_task(self._flush_metrics())
        from bastion.server.readiness import ReadinessGauge, StateProbe

        self._readiness_gauge = ReadinessGauge(self.metrics.registry)
        self._probe = StateProbe(self.services.state)
        self._probe.start()
        self.services.audit.admin("gateway.start", "success", config_hash=compiled.config_hash,
                                  listeners=[f"{h}:{p}" for h, p in self.bound])
        self._ready = True

    def _scrape(self) -> None:
        """Gauges read from the running state at the data plane's instant, then the batched counts."""
        if self.gateway is not None:
            self.metrics.posture(exceptions_in_force(self.gateway.compiled, self.services.wall_clock()),
                                 len(self.connections))
        self.metrics.flush()

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._scrape()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close everything."""
        self._ready = False
        for server in self.servers:  # first: nothing below may keep a stopping process accepting requests
            server.close()
        if self._flusher is not None:
            self._flusher.cancel()
        if self._probe is not None:
            await self._probe.close()
        gateway = self.gateway
        if drain_timeout is None:
            drain_timeout = gateway.compiled.config.model.gateway.limits.drain_timeout if gateway else 5.0
        for conn in list(self.connections):
            shutdown = getattr(conn, "shutdown", None)  # HTTP/2: GOAWAY, in-flight streams finish
            if shutdown is not None:
                shutdown()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections) + list(self.admin_connections):
            conn.abort()
        if gateway is not None:
            gateway.close()
            await self._close_shared(gateway.compiled)
        self.metrics.flush()
        if self._drift is not None:
            await self._drift.close()
        blocks = self.services.blocks
        if blocks is not None:
            with contextlib.suppress(Exception):
                await blocks.close()
        for task in list(self._tasks):  # a replaced state backend waiting out its grace: close it now
            task.cancel()
        if self.services.state is not None:
            with contextlib.suppress(Exception):
                await self.services.state.close()
        if self.services.audit is not None:
            self.services.audit.admin("gateway.stop", "success")
            await self.services.audit.close()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        await self._stopping.wait()
        await self.stop()


def default_state(gw: Any) -> Any:
    """The state backend of a gateway section: `memory` or Redis (a worker's runtime replaces this)."""
    return open_state(gw.state, gw.state_password.value() if gw.state_password else None,
                      gw.limits.max_rate_limit_keys)
