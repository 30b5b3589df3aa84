"""Business flows (OWASP API6:2023): step order, tempo and limits over a whole flow, per caller.

Each request to a route that is a step of a flow is checked against what the same caller (the flow's key) did
before, in the shared state (memory or Redis, as rate limits): the `after` step must have happened within
`within` and at least `min_gap` ago, and the step's and the flow's limits must not be exhausted. Refusals are
audited with the flow and the step (policy id `flow:<flow>/<api>/<route>/flows.<step>`), and feed the
detector's `flow_abuse` rule, which can block the caller.

Not a baseline control (a class cannot switch it off); flows are declared once, at the top of the config.
"""

from __future__ import annotations

from bastion.stages.flows.config import FlowConfig, FlowStep
from bastion.stages.flows.stage import FlowStage, build, flow_diagnostics, prepare

__all__ = ["FlowConfig", "FlowStage", "FlowStep", "build", "flow_diagnostics", "prepare"]
