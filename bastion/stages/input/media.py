"""Media types and the non-JSON body formats: matching Content-Type against an operation, urlencoded forms and
multipart/form-data with part-count and part-size limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from bastion.stages.input.params import ParameterError, parse_query


def media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """`Application/JSON; charset=UTF-8` -> ("application/json", {"charset": "UTF-8"})."""
    if not value:
        return "", {}
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        name, eq, val = item.strip().partition("=")
        if eq:
            params[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), params


def is_json(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def match_media(kind: str, declared: dict[str, Any]) -> str | None:
    """The `content` key of the operation that accepts `kind`: exact, then `type/*`, then `*/*` (OAS 3 §4.8.14)."""
    if not kind:
        return None
    keys = {media_type(key)[0]: key for key in declared}
    major = kind.split("/", 1)[0]
    for candidate in (kind, f"{major}/*", "*/*"):
        if candidate in keys:
            return keys[candidate]
    return None


class FormError(ValueError):
    """A form body that breaks a limit or cannot be decoded; `why` is safe to show."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason
        self.why = why


def parse_form(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("input_invalid_body", "The request body is not valid UTF-8.") from None
    if text.count("&") + 1 > max_fields:
        raise FormError("input_json_limits", f"The request body has more than {max_fields} fields.")
    try:
        return parse_query(text)
    except ParameterError:
        raise FormError("input_invalid_body", "The request body is not valid UTF-8 after decoding.") from None


def encode_form(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs).encode("ascii")


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


# A part's own header section (Content-Disposition, Content-Type): a few hundred bytes in practice
MAX_PART_HEAD_BYTES = 8 * 1024  # the default of `input.max_part_head_bytes`


def parse_multipart(body: bytes, boundary: str, max_parts: int, max_part_bytes: int,
                    max_head_bytes: int = MAX_PART_HEAD_BYTES) -> list[Part]:
    """RFC 7578 multipart/form-data, strictly: a part without a name, a missing closing delimiter or a
    part over the limits (`max_head_bytes` for its header section) is an error."""
    if not boundary or len(boundary) > 70:
        raise FormError("input_invalid_body", "The multipart body has no valid boundary.")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise FormError("input_invalid_body", "The multipart body is not terminated.")
    parts: list[Part] = []
    for chunk in chunks[1:-1]:
        if len(parts) >= max_parts:
            raise FormError("input_json_limits", f"The request body has more than {max_parts} parts.")
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise FormError("input_invalid_body", "The multipart body is malformed.")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise FormError("input_invalid_body", "The multipart body is malformed.")
        if len(data) > max_part_bytes:
            raise FormError("input_json_limits", f"A multipart part is larger than {max_part_bytes} bytes.")
        if len(head) > max_head_bytes:
            raise FormError("input_json_limits", f"A multipart part header is larger than {max_head_bytes} bytes.")
        headers: dict[str, str] = {}
        try:
            lines = head.decode("utf-8").split("\r\n")
        except UnicodeDecodeError:
            raise FormError("input_invalid_body", "A multipart part header is not valid UTF-8.") from None
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise FormError("input_invalid_body", "The multipart body is malformed.")
            headers[name.strip().lower()] = value.strip()
        disposition, params = media_type(headers.get("content-disposition"))
        if disposition != "form-data" or not params.get("name"):
            raise FormError("input_invalid_body", "A multipart part has no form-data name.")
        parts.append(Part(params["name"], params.get("filename"), media_type(headers.get("content-type"))[0]
                          or "text/plain", data))
    return parts
