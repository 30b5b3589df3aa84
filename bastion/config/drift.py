"""`gateway.drift`: alert when the running config drifts from an approved file (the model only;
`bastion.posture.drift` runs the watch).

```yaml
gateway:
  drift: {approved: /etc/bastion/approved/bastion.yaml, interval: 5m}
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from bastion.config.base import Duration, Model


class DriftConfig(Model):
    """`gateway.drift: {approved: approved/bastion.yaml, interval: 5m}`: alert when the running config drifts."""

    approved: Path = Field(description="The approved config file (relative paths: to the running config's "
                                       "directory), e.g. a checkout of the config in git.")
    interval: Duration = Field(300.0, gt=0, description="How often to compare, e.g. `5m`.")
