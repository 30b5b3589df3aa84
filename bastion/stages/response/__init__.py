"""Response controls: contract filtering of JSON bodies, 5xx rewriting, security headers and CORS.

Not a pipeline stage: the server asks the route's `ResponseFilter` (built by `build(policy.response, route,
shared)`) what to do with each upstream response, and to answer CORS preflights.
"""

from bastion.stages.response.config import CorsPolicy, ResponsePolicy, SecurityHeaders
from bastion.stages.response.filter import ResponseFilter, ResponsePlan, ResponseShared, build, prepare

__all__ = ["CorsPolicy", "ResponseFilter", "ResponsePlan", "ResponsePolicy", "ResponseShared", "SecurityHeaders",
           "build", "prepare"]
