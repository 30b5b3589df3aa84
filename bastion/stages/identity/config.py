"""Config models of the identity layer: the per-class policy, identity providers and consumers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.config.base import Model, control

Method = Literal["jwt", "api_key", "mtls", "introspection"]


class IdentityPolicy(Model):
    """`identity: {required: true, methods: [jwt]}`"""

    required: bool = control(
        True, stricter="true",
        description="A verified identity is required (`required: false` lets anonymous callers through).",
    )
    methods: list[Method] = control(
        ["jwt"], stricter="subset",
        description="Accepted credential types, e.g. `methods: [jwt, mtls]`.",
    )


class ProvidersConfig(Model):
    """`providers:` identity providers (filled in by the identity layer)."""

    jwt: list[dict] = Field(default_factory=list)


class ConsumerConfig(Model):
    """A named caller and its credentials."""

    name: str
