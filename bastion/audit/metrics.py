"""Prometheus metrics of audit delivery, detections and blocks (on the registry the caller passes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    """Queue depth and spool size per sink, delivered and dropped events, detections and active blocks."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge("bastion_audit_queue_depth", "Events waiting in memory for a sink.", ["sink"],
                                 registry=r, multiprocess_mode="livesum")
        self.spool_bytes = Gauge("bastion_audit_spool_bytes", "Bytes of undelivered events in a sink's spool.",
                                 ["sink"], registry=r, multiprocess_mode="livesum")
        self.spool_events = Gauge("bastion_audit_spool_events", "Undelivered events in a sink's spool.",
                                  ["sink"], registry=r, multiprocess_mode="livesum")
        self.delivered = Counter("bastion_audit_events_delivered_total", "Events delivered to a sink.", ["sink"],
                                 registry=r)
        self.dropped = Counter("bastion_audit_events_dropped_total",
                               "Events lost (spool full or disk error), by sink and reason.", ["sink", "reason"],
                               registry=r)
        self.sink_errors = Counter("bastion_audit_sink_errors_total", "Failed deliveries (retried later).",
                                   ["sink"], registry=r)
        self.detections = Counter("bastion_detections_total", "Detection findings raised.", ["detection"],
                                  registry=r)
        self.blocks_active = Gauge("bastion_blocks_active", "Temporary blocks in force (this instance's view).",
                                   ["kind"], registry=r, multiprocess_mode="livemax")
        self.blocks = Counter("bastion_blocks_total", "Temporary blocks placed.", ["kind"], registry=r)
