"""GraphQL limits: depth, cost, aliases, batches, directives, introspection, persisted queries and per-operation
scopes, for the routes that are GraphQL endpoints (docs/graphql.md).

Pipeline entry (a body stage: it reads the buffered POST body, or the GET query string):
    StageSpec("graphql", graphql.build, graphql.prepare)   # after the input body stage
"""

from bastion.stages.graphql.config import GraphqlPolicy
from bastion.stages.graphql.stage import GraphqlStage, build, is_graphql_route, prepare

__all__ = ["GraphqlPolicy", "GraphqlStage", "build", "is_graphql_route", "prepare"]
