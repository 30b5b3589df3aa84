"""GraphQL over HTTP: the operations one HTTP request carries, read the way servers read them, strictly.

- `GET ?query=...&operationName=...&variables={json}` (GraphQL over HTTP §5.1).
- `POST` with `application/json` (or `+json`): `{"query", "operationName", "variables", "extensions"}`, or a JSON
  array of such objects (a batch). `POST` with `application/graphql`: the body is the query.
- Anything a server could read differently from the gateway is refused: duplicate JSON keys, unknown members
  (`documentId`, `doc_id`: servers that run stored documents by id), a body together with GraphQL parameters
  in the URL (some servers prefer the URL's), repeated URL parameters, a persisted-query hash without the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bastion.context import RequestContext
from bastion.stages.input import jsonbody
from bastion.stages.input.params import ParameterError, parse_query

_KEYS = frozenset({"query", "operationName", "variables", "extensions"})
# Only duplicate keys and sheer size matter here; the input stage owns the JSON limits of the route.
_JSON_LIMITS = jsonbody.JsonLimits(max_depth=256, max_string=1 << 24, max_array=1 << 20, max_keys=1 << 20)


class RequestError(ValueError):
    """An HTTP request that does not carry a GraphQL request the gateway can check."""

    def __init__(self, reason: str, why: str, status: int = 400) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why
        self.status = status


@dataclass(frozen=True, slots=True)
class GraphqlRequest:
    """One GraphQL request (one entry of a batch)."""

    query: str
    operation_name: str | None
    variables: dict[str, Any] | None
    persisted_hash: str | None  # extensions.persistedQuery.sha256Hash, when the client sent one


def read(ctx: RequestContext, max_batch: int) -> tuple[list[GraphqlRequest], bool]:
    """The GraphQL requests of `ctx` and whether it was a batch. Raises RequestError."""
    try:
        url = parse_query(ctx.query)
    except ParameterError as exc:
        raise RequestError("graphql_invalid_request", f"The {exc.where} {exc.why}.") from None
    url_params = {name for name, _ in url if name in _KEYS}
    body = ctx.body or b""
    if not body:
        if ctx.method not in ("GET", "HEAD") and not url_params:
            raise RequestError("graphql_invalid_request", "The request carries no GraphQL query.")
        return [_from_url(url)], False
    if url_params:
        raise RequestError("graphql_invalid_request",
                           "A GraphQL request is sent in the body or in the URL, not both.")
    if ctx.method in ("GET", "HEAD"):
        raise RequestError("graphql_invalid_request", "A GET request carries the query in the URL.")
    kind = (ctx.header("content-type") or "").split(";", 1)[0].strip().lower()
    if kind == "application/graphql":
        try:
            return [GraphqlRequest(body.decode("utf-8"), None, None, None)], False
        except UnicodeDecodeError:
            raise RequestError("graphql_invalid_request", "The request body is not valid UTF-8.") from None
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise RequestError("graphql_unsupported_media_type",
                           "A GraphQL request body must be application/json or application/graphql.", 415)
    try:
        doc = jsonbody.parse(body, _JSON_LIMITS)
    except jsonbody.JsonError as exc:
        raise RequestError("graphql_invalid_request", exc.why) from None
    if isinstance(doc, list):
        if not doc:
            raise RequestError("graphql_invalid_request", "The batch is empty.")
        if len(doc) > max_batch:
            raise RequestError("graphql_batch_exceeded", f"A batch may hold at most {max_batch} operations.")
        return [_from_object(item, f"batch entry {i}") for i, item in enumerate(doc)], True
    return [_from_object(doc, "request body")], False


def _from_url(url: list[tuple[str, str]]) -> GraphqlRequest:
    values: dict[str, str] = {}
    for name, value in url:
        if name in _KEYS:
            if name in values:
                raise RequestError("graphql_invalid_request", f"The URL parameter '{name}' must be sent once.")
            values[name] = value
    if "query" not in values:
        raise RequestError("graphql_invalid_request", "The URL has no 'query' parameter.")
    doc: dict[str, Any] = {"query": values["query"], "operationName": values.get("operationName") or None}
    for name in ("variables", "extensions"):
        if values.get(name):
            try:
                doc[name] = orjson.loads(values[name])
            except orjson.JSONDecodeError:
                raise RequestError("graphql_invalid_request", f"The URL parameter '{name}' is not JSON.") from None
    return _from_object(doc, "URL")


def _from_object(item: Any, where: str) -> GraphqlRequest:
    if not isinstance(item, dict):
        raise RequestError("graphql_invalid_request", f"The {where} must be a JSON object.")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise RequestError("graphql_invalid_request", f"The {where} has an unknown member '{unknown[0]}'.")
    operation_name = item.get("operationName")
    variables = item.get("variables")
    extensions = item.get("extensions")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError("graphql_invalid_request", f"operationName in the {where} must be a string.")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError("graphql_invalid_request", f"variables in the {where} must be an object.")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError("graphql_invalid_request", f"extensions in the {where} must be an object.")
    persisted = (extensions or {}).get("persistedQuery")
    digest = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if persisted is not None and not isinstance(digest, str):
        raise RequestError("graphql_invalid_request", f"extensions.persistedQuery in the {where} has no sha256Hash.")
    query = item.get("query")
    if query is None:
        if digest is not None:  # Automatic Persisted Queries: the upstream would run a document never checked
            raise RequestError("graphql_persisted_query_unsupported",
                               "Send the query text with its persisted-query hash.")
        raise RequestError("graphql_invalid_request", f"The {where} has no query.")
    if not isinstance(query, str):
        raise RequestError("graphql_invalid_request", f"query in the {where} must be a string.")
    return GraphqlRequest(query, operation_name or None, variables, digest.lower() if digest else None)
