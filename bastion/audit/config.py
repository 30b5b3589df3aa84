"""Config model of the audit section: `gateway.audit` (sinks, spool, detections and responses).

```yaml
gateway:
  audit:
    spool_dir: /var/spool/bastion/audit
    sinks:
      - {name: local, type: file, path: /var/log/bastion/audit.jsonl, max_bytes: 100MiB, backups: 5}
      - {name: siem, type: syslog, host: siem.example.net, port: 6514, tls: {ca: /etc/bastion/siem-ca.pem}}
      - {name: hec, type: http, url: "https://splunk.example.net:8088/services/collector", token_env: HEC_TOKEN}
    detections:
      credential_stuffing: {per_ip: 20, window: 60s, block: [ip], block_for: 15m}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bastion.config.base import Duration, Model, Size
from bastion.config.secrets import SecretRef

Format = Literal["ocsf", "ecs"]
BlockKind = Literal["ip", "subject", "consumer"]


class TlsClientConfig(Model):
    """TLS towards a sink: `{ca: ca.pem}`; `cert`/`key` for a client certificate the receiver requires."""

    ca: Path | None = Field(None, description="CA bundle the receiver's certificate must chain to "
                            "(the system store when omitted).")
    cert: Path | None = Field(None, description="Client certificate (PEM), when the receiver asks for one.")
    key: Path | SecretRef | None = Field(None, description="Key of `cert` (PEM): a path, or `{env: NAME}` / "
                                         "`{file: PATH}`.")
    server_name: str | None = Field(None, description="Name to verify instead of the sink's host.")


class AuditSinkConfig(Model):
    """One destination of audit events.

    - `{type: file, path: audit.jsonl, max_bytes: 100MiB, backups: 5}`: JSON lines, rotated by size.
    - `{type: stdout}`: JSON lines on standard output (containers).
    - `{type: syslog, host: siem, port: 6514, tls: {ca: ca.pem}}`: RFC 5424 over TCP, octet-counting framing
      (RFC 6587 §3.4.1), TLS when `tls` is set (RFC 5425).
    - `{type: http, url: https://siem/collector, token_env: HEC_TOKEN}`: batches POSTed with a bearer token.
    """

    type: Literal["file", "stdout", "syslog", "http"] = "file"
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                             description="Names the sink in metrics and its spool directory (default: type+index).")
    format: Format = Field("ocsf", description="`ocsf` (default) or `ecs` (Elastic Common Schema mapping).")
    # file
    path: Path | None = Field(None, description="File sink: the JSON-lines file (relative to the config file).")
    max_bytes: Size = Field(100 * 1024 * 1024, description="File sink: rotate when the file would pass this.")
    backups: int = Field(5, ge=0, le=1000, description="File sink: rotated files kept (`audit.jsonl.1` ...).")
    # syslog and http
    host: str | None = Field(None, description="Syslog sink: receiver host.")
    port: int | None = Field(None, ge=1, le=65535, description="Syslog sink: TCP port (default 514, 6514 with TLS).")
    tls: TlsClientConfig | None = Field(None, description="Syslog sink: TLS settings (RFC 5425); HTTP sink: "
                                        "CA and client certificate for an https URL.")
    app_name: str = Field("bastion", pattern=r"^[!-~]{1,48}$", description="Syslog APP-NAME.")
    facility: int = Field(13, ge=0, le=23, description="Syslog facility (13 = log audit).")
    resend_window: Duration = Field(5.0, description="Syslog sink: plain TCP has no acknowledgement, so the "
                                    "events written in this many seconds before a broken connection are sent "
                                    "again after it is re-established (receivers de-duplicate by metadata.uid).")
    url: str | None = Field(None, pattern=r"^https?://", description="HTTP sink: collector URL.")
    token_env: str | None = Field(None, description="HTTP sink: environment variable holding the bearer token.")
    token_file: Path | None = Field(None, description="HTTP sink: file holding the bearer token.")
    token: SecretRef | None = Field(None, description="HTTP sink: the bearer token, `{env: NAME}` or "
                                    "`{file: PATH}`.")
    auth_scheme: str = Field("Bearer", pattern=r"^[A-Za-z]+$",
                             description="HTTP sink: `Bearer`, or `Splunk` for a Splunk HEC.")
    body: Literal["hec", "ndjson"] = Field("hec", description="HTTP sink: `hec` (`{\"event\": ...}` objects "
                                           "concatenated, as a Splunk HEC takes them) or `ndjson`.")
    batch_events: int = Field(500, ge=1, le=100_000, description="Most events per write or POST.")
    batch_bytes: Size = Field(1024 * 1024, description="Most bytes per POST.")
    timeout: Duration = Field(5.0, description="Connect/write/response timeout of one delivery.")
    memory_events: int = Field(10_000, ge=1, description="Events held in memory for this sink; beyond this "
                               "(a slow or absent sink) they spill to the sink's disk spool.")

    @model_validator(mode="after")
    def _fields_for_type(self) -> AuditSinkConfig:
        if self.type == "file" and self.path is None:
            raise ValueError("a file sink needs `path`")
        if self.type == "syslog" and not self.host:
            raise ValueError("a syslog sink needs `host`")
        if self.type == "http" and not self.url:
            raise ValueError("an http sink needs `url`")
        if self.tls is not None and (self.tls.cert is None) != (self.tls.key is None):
            raise ValueError("`tls.cert` and `tls.key` go together")
        return self


class DetectionRule(Model):
    """One detection: a threshold within a sliding window, and what to do when it is crossed.

    `{threshold: 20, window: 60s, block: [ip], block_for: 15m, webhook: true}`
    """

    enabled: bool = True
    threshold: int = Field(20, ge=1, description="Events within `window` that raise the finding.")
    window: Duration = Field(60.0, description="Length of the sliding window.")
    block: list[BlockKind] = Field(default_factory=list, description="Block these of the offender on a finding "
                                   "(`ip`, `subject`, `consumer`); empty: alert only.")
    block_for: Duration = Field(900.0, description="How long a block lasts; it expires by itself.")
    webhook: bool = Field(True, description="Call `responses.webhook` (when configured) on a finding.")


class CredentialStuffingRule(DetectionRule):
    """Authentication failures per source IP, per consumer and per subject."""

    threshold: int = Field(20, ge=1, description="Failures per IP within `window`.")
    per_subject: int = Field(10, ge=1, description="Failures per subject (token `sub` / key id) within `window`.")
    per_consumer: int = Field(50, ge=1, description="Failures per consumer within `window`.")
    block: list[BlockKind] = Field(["ip"])  # pydantic copies a mutable default per instance


class EnumerationRule(DetectionRule):
    """Distinct object ids answered 403/404 for one caller (BOLA scraping)."""

    threshold: int = Field(30, ge=1, description="Distinct object ids refused within `window`.")
    block: list[BlockKind] = Field(["subject"], description="The caller's subject "
                                   "(its IP when it has none).")


class UsageAnomalyRule(DetectionRule):
    """A caller's rate far above its own baseline (exponentially weighted over `baseline` seconds)."""

    threshold: int = Field(300, ge=1, description="Requests within `window` below which nothing is flagged.")
    factor: float = Field(10.0, gt=1, description="Flag when the window's rate exceeds this times the baseline.")
    baseline: Duration = Field(3600.0, description="Time constant of the caller's baseline rate.")
    warmup: Duration = Field(600.0, description="A caller's baseline is trusted only after this long.")


class InputViolationRule(DetectionRule):
    """Input-validation denials (schema, size, injection patterns) from one source."""

    threshold: int = Field(20, ge=1)


class ForgedTokenRule(DetectionRule):
    """Tokens with a bad signature or a refused algorithm (`jwt_bad_signature`, `jwt_alg_not_allowed`)."""

    threshold: int = Field(3, ge=1)
    window: Duration = Field(600.0)
    block: list[BlockKind] = Field(["ip"])  # pydantic copies a mutable default per instance


class FlowAbuseRule(DetectionRule):
    """Business-flow violations (`flow_order`, `flow_tempo`, `flow_limit`) by one caller: a scripted flow (API6)."""

    threshold: int = Field(5, ge=1)
    window: Duration = Field(600.0)
    block: list[BlockKind] = Field(default_factory=lambda: list[BlockKind](["subject"]),
                                   description="The caller's subject (its IP when it has none).")


class DetectionsConfig(Model):
    """`detections: {credential_stuffing: {...}, enumeration: {...}, ...}`; all on by default, alert-and-block."""

    enabled: bool = Field(True, description="Run the detectors at all.")
    credential_stuffing: CredentialStuffingRule = CredentialStuffingRule()
    enumeration: EnumerationRule = EnumerationRule()
    usage_anomaly: UsageAnomalyRule = UsageAnomalyRule()
    input_violations: InputViolationRule = InputViolationRule()
    forged_tokens: ForgedTokenRule = ForgedTokenRule()
    flow_abuse: FlowAbuseRule = FlowAbuseRule()
    max_keys: int = Field(100_000, ge=100, description="Most tracked keys per detector (least recently used "
                          "evicted first), so an attacker rotating addresses cannot grow memory without bound.")
    never_block: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"],
                                   description="IPs, subjects or consumers never blocked (alerts still fire).")


class WebhookConfig(Model):
    """`{url: https://alerts.example.net/hook, token_env: ALERT_TOKEN}`: each finding POSTed as JSON."""

    url: str = Field(pattern=r"^https?://")
    token_env: str | None = None
    token: SecretRef | None = Field(None, description="`{env: NAME}` or `{file: PATH}`.")
    timeout: Duration = 5.0
    tls: TlsClientConfig | None = None


class ResponsesConfig(Model):
    """What a finding may trigger besides its alert event."""

    webhook: WebhookConfig | None = None
    max_active_blocks: int = Field(10_000, ge=1, description="Most blocks in force at once (others alert only).")


class AuditConfig(Model):
    """`audit: {sinks: [...], queue_size: 65536, spool_dir: ..., detections: {...}, responses: {...}}`"""

    sinks: list[AuditSinkConfig] = Field(default_factory=list)
    queue_size: int = Field(65536, ge=16, description="Events waiting for the writer; past this they go straight "
                            "to the spools (never dropped, never waited on).")
    spool_dir: Path | None = Field(None, description="Where undelivered events wait, one directory per sink "
                                   "(default: `audit-spool` beside the config file).")
    spool_max_bytes: Size = Field(1024 ** 3, description="Most bytes spooled per sink; past this (or a full "
                                  "disk) events are dropped, counted and alerted.")
    spool_segment_bytes: Size = Field(16 * 1024 * 1024, description="Size of one spool segment file.")
    detections: DetectionsConfig = DetectionsConfig()
    responses: ResponsesConfig = ResponsesConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> AuditConfig:
        names = [sink_name(s, i) for i, s in enumerate(self.sinks)]
        if len(set(names)) != len(names):
            raise ValueError(f"audit sink names must be unique: {names}")
        return self


def sink_name(sink: AuditSinkConfig, index: int) -> str:
    return sink.name or f"{sink.type}{index}"
