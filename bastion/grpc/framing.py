"""gRPC length-prefixed message framing (1-byte flag, 4-byte big-endian length), counted as it streams."""

from __future__ import annotations


class MessageLimitError(Exception):
    """A stream broke a message limit; `reason` is the stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class MessageCounter:
    """Follows message boundaries across arbitrary chunks without buffering messages (sans-IO)."""

    __slots__ = ("_head", "_left", "max_bytes", "max_messages", "messages")

    def __init__(self, max_bytes: int, max_messages: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.messages = 0
        self._head = b""  # a partial 5-byte prefix
        self._left = 0  # bytes of the current message still to come

    def feed(self, data: bytes) -> None:
        """Account for `data`; raises MessageLimitError when a message is too large or too many arrive."""
        pos, size = 0, len(data)
        while pos < size:
            if self._left:
                step = min(self._left, size - pos)
                self._left -= step
                pos += step
                continue
            need = 5 - len(self._head)
            self._head += data[pos:pos + need]
            pos += need
            if len(self._head) < 5:
                return
            length = int.from_bytes(self._head[1:5], "big")
            self._head = b""
            self.messages += 1
            if self.max_messages is not None and self.messages > self.max_messages:
                raise MessageLimitError("grpc_too_many_messages", f"more than {self.max_messages} messages")
            if length > self.max_bytes:
                raise MessageLimitError("grpc_message_too_large", f"message of {length} bytes > {self.max_bytes}")
            self._left = length

    @property
    def complete(self) -> bool:
        """At a message boundary (a stream must not end inside a message)."""
        return not self._left and not self._head
