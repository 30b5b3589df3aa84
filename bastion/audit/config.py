"""Config model of the audit section: `gateway.audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bastion.config.base import Model


class AuditSinkConfig(Model):
    """`{type: file, path: /var/log/bastion/audit.jsonl}` or `{type: stdout}`"""

    type: Literal["file", "stdout"] = "file"
    path: Path | None = None

    @model_validator(mode="after")
    def _path_for_file(self) -> AuditSinkConfig:
        if self.type == "file" and self.path is None:
            raise ValueError("a file sink needs `path`")
        return self


class AuditConfig(Model):
    """`audit: {sinks: [...], queue_size: 65536}`"""

    sinks: list[AuditSinkConfig] = Field(default_factory=list)
    queue_size: int = Field(65536, ge=16)
