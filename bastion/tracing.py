"""OpenTelemetry traces of the gateway: a span per request, per stage, per upstream call and per audit hand-off,
exported over OTLP/HTTP (the official SDK), sampled by config. Off by default; when off nothing is imported
and the request path pays one `is None` test.

```yaml
gateway:
  tracing:
    enabled: true
    endpoint: http://otel-collector:4318/v1/traces
    sample_ratio: 0.01         # of new traces; an incoming `traceparent` keeps its caller's decision
```
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.util
from typing import Any

from pydantic import Field, model_validator

from bastion.config.base import Duration, Model
from bastion.context import Decision, Deny, RequestContext

# the trace id of the request being handled, for its audit event (None when tracing is off)
_TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("bastion_trace_id", default=None)
# whether the request being handled is recorded: stage spans are made only then
_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("bastion_recording", default=False)


class TracingConfig(Model):
    """`gateway.tracing`: OpenTelemetry spans exported over OTLP/HTTP (protobuf)."""

    enabled: bool = Field(False, description="Export spans. Off: no span is made and nothing is imported.")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", pattern=r"^https?://",
                          description="OTLP/HTTP traces endpoint of a collector.")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="Share of new traces recorded (0.01 = 1%); "
                                "a request with a `traceparent` follows its sampled flag.")
    service_name: str = Field("bastion", min_length=1, description="`service.name` of the spans.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers of the export requests.")
    timeout: Duration = Field(5.0, gt=0, description="Timeout of one export request.")
    export_interval: Duration = Field(2.0, gt=0, description="Spans are sent in batches at most this often.")
    max_queue: int = Field(8192, ge=64, description="Spans held for export; more are dropped (never blocks).")

    @model_validator(mode="after")
    def _installed(self) -> TracingConfig:
        if self.enabled and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise ValueError("tracing needs the OpenTelemetry SDK: pip install 'bastion-gateway[otel]'")
        return self


def current_trace_id() -> str | None:
    """The trace id (32 hex) of the request being handled, when it is traced."""
    return _TRACE_ID.get()


class Tracing:
    """The tracer of one gateway process. Build with `Tracing.start(config)`; None when tracing is off."""

    def __init__(self, config: TracingConfig, exporter: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        # a private provider: tests and workers may run several gateways, and the global one is not ours.
        # The sampling decision is taken in `begin`, before any span exists (an unsampled request then costs
        # no OpenTelemetry object at all); what reaches the SDK is recorded.
        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}),
                                       sampler=ParentBased(ALWAYS_ON))
        # TraceIdRatioBased's rule: the trace id's low 64 bits under ratio x 2^64
        self._bound = round(config.sample_ratio * (2**64 - 1))
        self._null = contextlib.nullcontext()
        exporter = exporter or OTLPSpanExporter(endpoint=config.endpoint, headers=config.headers or None,
                                                timeout=config.timeout)
        self.provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=config.max_queue, schedule_delay_millis=int(config.export_interval * 1000),
            max_export_batch_size=min(512, config.max_queue)))
        self.tracer = self.provider.get_tracer("bastion")
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT

    @classmethod
    def start(cls, config: TracingConfig | None) -> Tracing | None:
        return cls(config) if config is not None and config.enabled else None

    # ---- the request --------------------------------------------------------------------------------------

    def begin(self, ctx: RequestContext, host: str, traceparent: str) -> tuple[Any, Any, str]:
        """The request's span, made current (a caller's `traceparent` is its parent); returns it (None when the
        request is not sampled), the tokens to end it with, and the `traceparent` the gateway sends on.

        `traceparent` is the one the gateway made (`next_traceparent`): the caller's trace id and flags when the
        caller sent a valid one, else a new trace. W3C Trace Context / OpenTelemetry ParentBased sampling: a
        caller's sampled flag decides; a new trace is sampled when its id falls under `sample_ratio`.
        """
        incoming = ctx.header("traceparent")
        continued = incoming is not None and incoming.strip()[3:35] == traceparent[3:35]
        if continued:
            sampled = bool(int(traceparent[53:55], 16) & 1)
        else:
            sampled = int(traceparent[19:35], 16) <= self._bound and self._bound > 0
        if not sampled:
            if not continued:
                traceparent = traceparent[:53] + "00"  # the upstream is told: not recorded
            return None, (_TRACE_ID.set(traceparent[3:35]), None, None), traceparent
        parent = self._propagator.extract({"traceparent": incoming}) if continued else None
        span = self.tracer.start_span(f"{ctx.method}", context=parent, kind=self._server, attributes={
            "http.request.method": ctx.method, "url.path": ctx.path, "client.address": ctx.client_ip,
            "server.address": host, "bastion.request_id": ctx.request_id})
        from opentelemetry import context as otel_context

        token = otel_context.attach(self._trace.set_span_in_context(span))
        span_context = span.get_span_context()
        trace_token = _TRACE_ID.set(f"{span_context.trace_id:032x}")
        return span, (trace_token, token, _RECORDING.set(True)), _traceparent(span_context)

    def upstream(self, address: str, traceparent: str) -> tuple[Any, str]:
        """A client span for the call to the upstream and the `traceparent` naming it as the parent; nothing
        for a request that is not recorded."""
        if not _RECORDING.get():
            return None, traceparent
        span = self.tracer.start_span("upstream", kind=self._client, attributes={"server.address": address})
        return span, _traceparent(span.get_span_context())

    def end_upstream(self, span: Any, status: int | None, name: str = "http.response.status_code") -> None:
        """The upstream call is over, with its status (`rpc.grpc.status_code` for a gRPC call)."""
        span.set_attribute(name, status or 0)
        span.end()

    def audit(self) -> Any:
        """A span around the audit hand-off (building the event and queueing it to the sinks)."""
        return self.tracer.start_as_current_span("audit") if _RECORDING.get() else self._null

    def finish(self, span: Any, tokens: Any, ctx: RequestContext, status: int, deny: Deny | None) -> None:
        from opentelemetry import context as otel_context

        trace_token, token, recording_token = tokens
        _TRACE_ID.reset(trace_token)
        if span is None:
            return
        _RECORDING.reset(recording_token)
        if ctx.route:
            span.update_name(f"{ctx.method} {ctx.route}")
            span.set_attribute("http.route", ctx.route)
            span.set_attribute("bastion.api", ctx.api)
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("bastion.decision", "deny" if deny is not None else "allow")
        if deny is not None:
            span.set_attribute("bastion.reason", deny.reason)
        if status >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()
        otel_context.detach(token)

    # ---- stages -------------------------------------------------------------------------------------------

    def instrument(self, routes: list[Any]) -> None:
        """Wrap every stage of every plan of `routes` (compiled routes) in a span; done once per (re)load."""
        for route in routes:
            route.plans[:] = [dataclasses.replace(plan, stages=tuple(_TracedStage(s, self.tracer) for s in plan.stages),
                                                  body_stages=tuple(_TracedStage(s, self.tracer)
                                                                    for s in plan.body_stages))
                              for plan in route.plans]

    def close(self) -> None:
        """Send what is queued, then stop."""
        self.provider.shutdown()


class _TracedStage:
    """A stage with a span around its check; everything else is the stage's own."""

    def __init__(self, stage: Any, tracer: Any) -> None:
        self._stage = stage
        self._tracer = tracer
        self.control = stage.control

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stage, name)

    async def check(self, ctx: RequestContext) -> Decision:
        if not _RECORDING.get():
            return await self._stage.check(ctx)  # type: ignore[no-any-return]
        with self._tracer.start_as_current_span(f"stage {self.control}") as span:
            decision: Decision = await self._stage.check(ctx)
            if decision.__class__ is Deny:
                span.set_attribute("bastion.decision", "deny")
                span.set_attribute("bastion.reason", decision.reason)
            return decision


def _traceparent(span_context: Any) -> str:
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
