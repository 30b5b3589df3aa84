"""`flows:` sensitive business flows (OWASP API6:2023): ordered steps, each a route, guarded as a whole.

```yaml
flows:
  - name: purchase
    key: consumer                    # who a flow belongs to: consumer, client_ip, credential, header:x-device-id ...
    on_violation: refuse             # order and tempo violations: refuse (403) or flag (audited, let through)
    max: 200                         # steps of this flow per key per `per` (all steps together)
    per: 1h
    steps:
      - {name: browse, route: shop/list-items}
      - {name: cart, route: shop/add-to-cart, after: browse, within: 1h}
      - {name: checkout, route: shop/checkout, after: cart, within: 30m, min_gap: 2s, max: 3, per: 1d}
    countries: [FR, DE, BE]          # client signals (gateway.signals): only from these countries
    refuse_reputation: [tor]         # and never from addresses on these lists
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bastion.config.base import Duration, Model

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class FlowStep(Model):
    """One step: a route, the step that must come before it (and how recently, how slowly) and its own limit."""

    name: str = Field(pattern=_NAME, description="`checkout`: named in audit events (`flow purchase, step ...`).")
    route: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$",
                       description="`api/route` (the route's name, or its OpenAPI operationId).")
    after: str | None = Field(None, description="An earlier step this one needs from the same key (`cart`).")
    within: Duration = Field(1800.0, gt=0, description="How recent the `after` step must be (`30m`).")
    min_gap: Duration = Field(0.0, description="Least time since the `after` step (`2s`): faster is a script.")
    max: int | None = Field(None, ge=1, description="This step at most `max` times per key per `per`.")
    per: Duration = Field(86400.0, gt=0, description="The window of `max` (`1d`).")


class FlowConfig(Model):
    """A business flow: its steps in order, whose caller it counts, and what a violation does."""

    name: str = Field(pattern=_NAME)
    key: str = Field("consumer", description="Whose flow: `consumer`, `client_ip`, `credential`, "
                     "`header:x-device-id`, `claim:sub` or a `+` of them (as in rate limits).")
    steps: list[FlowStep] = Field(min_length=1)
    on_violation: Literal["refuse", "flag"] = Field(
        "refuse", description="Order and tempo violations: `refuse` (403) or `flag` (audited, let through). "
        "Limits always refuse (429).")
    max: int | None = Field(None, ge=1, description="All steps of the flow together, per key per `per`.")
    per: Duration = Field(3600.0, gt=0)
    countries: list[str] | None = Field(
        None, description="Steps only from these countries (`[FR, DE]`, `gateway.signals.geoip`); an address "
        "of unknown country, or no database, is refused.")
    refuse_reputation: list[str] = Field(
        default_factory=list, description="Steps refused to clients on these reputation lists (`[tor, scanners]`).")

    @model_validator(mode="after")
    def _steps(self) -> FlowConfig:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step {step.name!r} appears twice in flow {self.name!r}")
            if step.after is not None and step.after not in seen:
                raise ValueError(f"step {step.name!r}: `after: {step.after}` must name an earlier step")
            if step.min_gap and step.after is None:
                raise ValueError(f"step {step.name!r}: `min_gap` is measured from `after`, which is missing")
            seen.add(step.name)
        return self
