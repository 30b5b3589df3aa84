"""The running gateway: load and compile the config, open listeners, reload, drain, and run several workers.

`serve --workers N` starts N worker processes that share the listening ports through SO_REUSEPORT; the parent
supervises them, serves the admin listener with metrics aggregated over all workers, and forwards SIGHUP
(reload) and SIGTERM (graceful drain) to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bastion.audit.blocks import BlockList
from bastion.audit.detect import Detector
from bastion.audit.log import AuditLog
from bastion.compile import CompiledGateway, compile_config
from bastion.config.loader import ConfigError, load_config
from bastion.config.models import AdminConfig, GatewayConfig, ListenerConfig
from bastion.server.admin import AdminApi, AdminBackend, read_events
from bastion.server.admin_routes import block_routes, identity_routes
from bastion.server.dispatch import alpn, protocol_factory
from bastion.server.http1 import Http1Connection, ServerLimits
from bastion.server.http2 import H2Limits, H2Stats
from bastion.server.metrics import Metrics
from bastion.server.proxy import Gateway
from bastion.stages.base import Services
from bastion.state import open_state


def server_limits(gw: GatewayConfig) -> ServerLimits:
    lim = gw.limits
    return ServerLimits(lim.header_timeout, lim.body_idle_timeout, lim.keepalive_timeout, lim.max_header_bytes,
                        lim.max_headers, lim.min_body_rate, lim.min_body_rate_grace)


def listener_ssl(listener: ListenerConfig | AdminConfig, base: Path) -> ssl.SSLContext | None:
    """TLS 1.2+ with TLS 1.3 preferred, forward-secret AEAD ciphers only, optional client certificates."""
    tls = listener.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(_resolve(base, tls.cert), _resolve(base, tls.key))
    if tls.client_ca is not None and tls.client_cert != "none":
        context.load_verify_locations(_resolve(base, tls.client_ca))
        context.verify_mode = ssl.CERT_REQUIRED if tls.client_cert == "required" else ssl.CERT_OPTIONAL
    return context


def _resolve(base: Path, path: Path) -> str:
    return str(path if path.is_absolute() else base / path)


def make_admin_auth(compiled: CompiledGateway) -> Any:
    """The admin API's authenticator for this config, or None (loopback admin without `auth`)."""
    cfg = compiled.config.model
    if cfg.gateway.admin.auth is None:
        return None
    from bastion.posture.admin_auth import AdminAuth

    return AdminAuth(cfg.gateway.admin.auth, cfg.providers.jwt)


def audit_file_path(gw: GatewayConfig, base: Path) -> Path | None:
    """The first file sink: the admin API's report, inventory and dashboard read their events there."""
    for sink in gw.audit.sinks:
        path = getattr(sink, "path", None)
        if getattr(sink, "type", "") == "file" and path is not None:
            return path if path.is_absolute() else base / path
    return None


class Runtime:
    """One gateway process: the listeners, the compiled config and its reloads."""

    def __init__(self, config_path: str | Path, *, services: Services | None = None, worker: bool = False,
                 serve_admin: bool = True) -> None:
        self.config_path = Path(config_path)
        self.services = services or Services()
        self.metrics = Metrics()
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

    # ---- config -------------------------------------------------------------------------------------------

    async def _compile(self) -> CompiledGateway:
        loaded = load_config(self.config_path)
        compiled = compile_config(loaded, self.services)
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
            assert self.gateway is not None
            audit = self.services.audit
            try:
                compiled = await self._compile()
            except ConfigError as exc:
                self.metrics.config_reloads.labels("refused").inc()
                audit.admin("config.reload", "failure", peer=peer, errors=[str(d) for d in exc.diagnostics])
                print(f"bastion: reload refused, still serving the previous config:\n{exc}", file=sys.stderr)
                return False, str(exc)
            except Exception as exc:
                self.metrics.config_reloads.labels("refused").inc()
                audit.admin("config.reload", "failure", peer=peer, errors=[repr(exc)])
                return False, repr(exc)
            try:
                self._reload_certificates(compiled)
            except (OSError, ssl.SSLError) as exc:
                await self._close_shared(compiled)
                self.metrics.config_reloads.labels("refused").inc()
                audit.admin("config.reload", "failure", peer=peer, errors=[f"TLS certificate: {exc}"])
                return False, f"TLS certificate: {exc}"
            old = self.gateway.compiled
            self.gateway.install(compiled)
            await self._close_shared(old)
            self.metrics.config_reloads.labels("accepted").inc()
            audit.admin("config.reload", "success", peer=peer, config_hash=compiled.config_hash)
            return True, f"config {compiled.config_hash} loaded"

    def _reload_certificates(self, compiled: CompiledGateway) -> None:
        """New certificates and keys serve the next handshakes; listener addresses change only on restart."""
        base = self.config_path.parent
        for context, listener in zip(self.tls_contexts, compiled.config.model.gateway.listeners, strict=False):
            if context is not None and listener.tls is not None:
                context.load_cert_chain(_resolve(base, listener.tls.cert), _resolve(base, listener.tls.key))

    def ready(self) -> bool:
        """Listening, and every layer that needs remote material (e.g. JWKS) has it."""
        if not self._ready or self.gateway is None:
            return False
        return all(shared.ready() for shared in self.gateway.compiled.shared.lifecycle())

    def info(self) -> dict[str, Any]:
        gateway = self.gateway
        if gateway is None:
            return {"config_hash": None}
        compiled = gateway.compiled
        return {"config_hash": compiled.config_hash, "loaded_at": compiled.loaded_at,
                "config_file": str(self.config_path), "routes": len(compiled.routes), "pid": os.getpid()}

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        loaded = load_config(self.config_path)
        gw = loaded.model.gateway
        base = self.config_path.parent
        if self.services.audit is None:
            self.services.audit = AuditLog.from_config(gw.audit, base, registry=self.metrics.registry)
        if self.services.state is None:  # shared limits, blocks and revocations; lives as long as the process
            self.services.state = open_state(gw.state)
        services = self.services
        if services.blocks is None:  # detections and their responses, shared through the state backend
            services.blocks = BlockList(services.state, audit=services.audit)
            services.detector = Detector.from_config(gw.audit, services.audit, services.blocks, base)
        blocks = services.blocks
        await self.services.audit.start()
        compiled = await self._compile()
        self.gateway = Gateway(compiled, self.services, self.metrics)
        limits = server_limits(gw)
        loop = asyncio.get_running_loop()
        gateway = self.gateway
        h2_stats = H2Stats(self.metrics.registry)
        h2_limits = H2Limits.derive(limits, **gw.http2.model_dump())
        for listener in gw.listeners:
            context = listener_ssl(listener, base)
            http2 = context is not None and listener.http2
            if http2:
                alpn(context)  # type: ignore[arg-type]
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
            audit_file = audit_file_path(gw, base)
            admin = AdminApi(AdminBackend(
                registry=self.metrics.registry, ready=self.ready, info=self.info, reload=self.reload,
                compiled=lambda: gateway.compiled, events=lambda: read_events(audit_file),
                auth=lambda: gateway.compiled.shared.admin_auth, audit=self.services.audit,
                blocks=blocks.list_blocks, before_scrape=self.metrics.flush,
                extra_routes={**block_routes(blocks), **identity_routes(lambda: gateway.compiled)},
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
        self.services.audit.admin("gateway.start", "success", config_hash=compiled.config_hash,
                                  listeners=[f"{h}:{p}" for h, p in self.bound])
        self._ready = True

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.metrics.flush()

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close everything."""
        self._ready = False
        if self._flusher is not None:
            self._flusher.cancel()
        gateway = self.gateway
        if drain_timeout is None:
            drain_timeout = gateway.compiled.config.model.gateway.limits.drain_timeout if gateway else 5.0
        for server in self.servers:
            server.close()
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


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config_path: str, workers: int | None = None) -> int:
    """`bastion serve`: one process, or a supervisor of N workers."""
    loaded = load_config(config_path)  # fail fast, before forking anything
    compile_config(loaded)
    count = workers or loaded.model.gateway.workers
    install_uvloop()
    if count <= 1:
        return asyncio.run(_serve_one(config_path, worker=False, serve_admin=True))
    return _supervise(config_path, count)


async def _serve_one(config_path: str, *, worker: bool, serve_admin: bool) -> int:
    runtime = Runtime(config_path, worker=worker, serve_admin=serve_admin)
    await runtime.start()
    # what start-up built (modules, config, compiled plans) lives as long as the process: out of the cyclic
    # collector's sight, so its collections walk only what requests allocate
    gc.freeze()
    listening = ", ".join(f"http://{h}:{p}" for h, p in runtime.bound)
    print(f"bastion: pid {os.getpid()} serving {listening}", file=sys.stderr, flush=True)
    await runtime.run_forever()
    return 0


def worker_main(config_path: str) -> int:
    install_uvloop()
    return asyncio.run(_serve_one(config_path, worker=True, serve_admin=False))


def _supervise(config_path: str, count: int) -> int:
    """Run `count` workers sharing the ports; serve admin with metrics from all of them."""
    metrics_dir = tempfile.mkdtemp(prefix="bastion-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    command = [sys.executable, "-m", "bastion", "serve", "-c", config_path, "--worker"]
    children = [subprocess.Popen(command, env=env) for _ in range(count)]
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    return asyncio.run(_supervisor(config_path, children))


async def _supervisor(config_path: str, children: list[subprocess.Popen[bytes]]) -> int:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    loaded = load_config(config_path)
    gw = loaded.model.gateway
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    stopping = asyncio.Event()

    async def reload(peer: str) -> tuple[bool, str]:
        nonlocal compiled
        try:
            compiled = compile_config(load_config(config_path))
        except ConfigError as exc:
            return False, str(exc)
        for child in children:
            child.send_signal(signal.SIGHUP)
        return True, "reload signalled to all workers"

    def ready() -> bool:
        return all(child.poll() is None for child in children)

    base = Path(config_path).parent
    compiled = compile_config(loaded)
    auth = make_admin_auth(compiled)
    if auth is not None:
        await auth.start()
    audit_file = audit_file_path(gw, base)
    admin = AdminApi(AdminBackend(
        registry=registry, ready=ready, info=lambda: {"workers": [c.pid for c in children]}, reload=reload,
        compiled=lambda: compiled, events=lambda: read_events(audit_file), auth=lambda: auth,
    ))
    loop = asyncio.get_running_loop()
    connections: set[Http1Connection] = set()
    server = None
    if gw.admin.enabled:
        admin_tls = listener_ssl(gw.admin, base) if gw.admin.tls is not None else None
        server = await loop.create_server(lambda: Http1Connection(admin.handle, server_limits(gw), connections),
                                          gw.admin.address, gw.admin.port, ssl=admin_tls)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload("SIGHUP")))
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    while not stopping.is_set() and ready():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.5)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(gw.limits.drain_timeout + 5)
        if child.poll() is None:
            child.kill()
    if server is not None:
        server.close()
    return 0 if stopping.is_set() else 1
