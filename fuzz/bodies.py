"""Body parsers: multipart and urlencoded forms, JSON limits, GraphQL documents, gRPC message framing."""

from __future__ import annotations

from typing import Any

from bastion.grpc.framing import MessageCounter, MessageLimitError
from bastion.stages.base import RouteInfo
from bastion.stages.graphql.analysis import DocumentError, analyse
from bastion.stages.graphql.config import GraphqlPolicy
from bastion.stages.graphql.stage import DocumentCache, GraphqlStage
from bastion.stages.input import jsonbody
from bastion.stages.input.media import FormError, parse_form, parse_multipart

MAX_PARTS, MAX_PART = 8, 256


def multipart(data: bytes) -> None:
    try:
        parts = parse_multipart(data, "b", MAX_PARTS, MAX_PART)
    except FormError:
        return
    if len(parts) > MAX_PARTS or any(len(p.data) > MAX_PART for p in parts):
        raise AssertionError("multipart limits exceeded")
    if any(not p.name for p in parts):
        raise AssertionError("a part without a name")


def form(data: bytes) -> None:
    try:
        fields = parse_form(data, 16)
    except FormError:
        return
    if len(fields) > 16:
        raise AssertionError("form field limit exceeded")


LIMITS = jsonbody.JsonLimits(max_depth=6, max_string=32, max_array=8, max_keys=8)


def _within(doc: Any, depth: int) -> None:
    """An independent, recursive check of what `jsonbody` accepted."""
    if isinstance(doc, str) and len(doc) > LIMITS.max_string:
        raise AssertionError("string over the limit accepted")
    if isinstance(doc, list | dict):
        if depth > LIMITS.max_depth:
            raise AssertionError("nesting over the limit accepted")
        if isinstance(doc, list):
            if len(doc) > LIMITS.max_array:
                raise AssertionError("array over the limit accepted")
            for item in doc:
                _within(item, depth + 1)
        else:
            if len(doc) > LIMITS.max_keys:
                raise AssertionError("object over the limit accepted")
            for key, value in doc.items():
                _within(key, depth + 1)
                _within(value, depth + 1)


def json_limits(data: bytes) -> None:
    try:
        doc = jsonbody.parse(data, LIMITS)
    except jsonbody.JsonError:
        return
    _within(doc, 1)


_stage: GraphqlStage | None = None


def graphql(data: bytes) -> None:
    global _stage
    if _stage is None:
        policy = GraphqlPolicy(enabled=True, max_depth=5, max_cost=200, max_tokens=400, max_aliases=4)
        route = RouteInfo(api="fuzz", route="graphql", klass="open", path="/graphql", methods=frozenset({"POST"}))
        _stage = GraphqlStage(policy, route, DocumentCache())
    parsed = _stage._parse(data.decode("utf-8", "replace"), "")
    if not isinstance(parsed, tuple):
        return
    doc, tokens = parsed
    if tokens > 400:
        raise AssertionError("parsed past max_tokens")
    try:
        analyse(doc, None, _stage.measure)
    except DocumentError:
        return


def grpc(data: bytes) -> None:
    """Length-prefixed messages in arbitrary chunks, against a reference count of the whole stream."""
    if not data:
        return
    step = data[0] % 7 + 1
    stream = data[1:]
    counter = MessageCounter(64, 4)
    try:
        for start in range(0, len(stream), step):
            counter.feed(stream[start:start + step])
    except MessageLimitError:
        return
    pos, messages = 0, 0
    while pos + 5 <= len(stream):
        length = int.from_bytes(stream[pos + 1:pos + 5], "big")
        messages += 1
        if length > 64 or messages > 4:
            raise AssertionError("a message over the limits passed")
        pos += 5 + length
    if counter.messages != messages:
        raise AssertionError(f"counted {counter.messages} messages, the stream has {messages}")
