"""`owners:` in the root file of a config directory: what each included file may define (docs/config.md)."""

from __future__ import annotations

from pydantic import Field

from bastion.config.base import Model


class FileOwners(Model):
    """What one included file (or glob of files) may define: `{apis: [team@example.com]}` or
    `{sections: [classes]}`."""

    sections: list[str] = Field(default_factory=lambda: ["apis"], description="Top-level sections the file may "
                                "hold: classes, providers, consumers, apis, exceptions.")
    apis: list[str] = Field(default_factory=list, description="`owner` values of the APIs it may define.")
