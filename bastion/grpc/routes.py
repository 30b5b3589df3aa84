"""gRPC methods as routes: `/package.Service/Method`, from a protobuf descriptor set or listed in config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class GrpcMethod:
    """One RPC method; `path` is what the HTTP/2 `:path` carries."""

    service: str  # fully qualified: "shop.v1.Orders"
    method: str
    client_streaming: bool = False
    server_streaming: bool = False
    input_type: str = ""  # fully qualified message name (for owner rules from request fields)

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def kind(self) -> str:
        if self.client_streaming and self.server_streaming:
            return "bidi_streaming"
        return "client_streaming" if self.client_streaming else "server_streaming" if self.server_streaming \
            else "unary"

    def route(self, name: str | None = None) -> dict[str, object]:
        """The API route entry for this method (a POST route on its path)."""
        return {"name": name or f"{self.service}.{self.method}", "path": self.path, "methods": ["POST"]}


def parse_method(path: str) -> GrpcMethod:
    """`/package.Service/Method` (or `package.Service/Method`). Raises ValueError otherwise."""
    parts = path.strip("/").split("/")
    if len(parts) != 2 or not all(parts) or not all(c.isalnum() or c in "._" for c in "".join(parts)):
        raise ValueError(f"not a gRPC method path: {path!r}")
    return GrpcMethod(parts[0], parts[1])


def methods_from_descriptor_set(data: bytes | Path) -> list[GrpcMethod]:
    """Every method of every service in a FileDescriptorSet (`protoc --descriptor_set_out`, `buf build -o`)."""
    from google.protobuf import descriptor_pb2

    raw = data.read_bytes() if isinstance(data, Path) else data
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    methods = []
    for file in fds.file:
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            for m in service.method:
                methods.append(GrpcMethod(prefix + service.name, m.name, m.client_streaming, m.server_streaming,
                                          m.input_type.lstrip(".")))
    return methods


class GrpcRoutes:
    """The known methods; anything else is answered UNIMPLEMENTED, like an unknown route."""

    def __init__(self, methods: Iterable[GrpcMethod]) -> None:
        self._by_path = {m.path: m for m in methods}

    def match(self, path: str) -> GrpcMethod | None:
        return self._by_path.get(path.split("?", 1)[0])

    def __len__(self) -> int:
        return len(self._by_path)


def message_decoders(data: bytes | Path) -> dict[str, Callable[[bytes], dict[str, Any]]]:
    """For each method path of a FileDescriptorSet, a function decoding one request message to a dict (protobuf
    JSON mapping, original field names): owner rules then read ids with JSON pointers (`body./order_id`)."""
    from google.protobuf import descriptor_pool, json_format, message_factory
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    raw = data.read_bytes() if isinstance(data, Path) else data
    pool = descriptor_pool.DescriptorPool()
    for file in FileDescriptorSet.FromString(raw).file:
        pool.Add(file)
    decoders: dict[str, Callable[[bytes], dict[str, Any]]] = {}
    for method in methods_from_descriptor_set(raw):
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(method.input_type))

        def decode(payload: bytes, cls: Any = cls) -> dict[str, Any]:
            message = cls.FromString(payload)
            decoded: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
            return decoded

        decoders[method.path] = decode
    return decoders
