"""Body parsers' own limits, one unit over each: form fields, multipart parts, part size and part headers."""

from __future__ import annotations

import pytest

from bastion.stages.input.media import MAX_PART_HEAD_BYTES, FormError, parse_form, parse_multipart


def _multipart(*parts: tuple[bytes, bytes]) -> bytes:
    out = b""
    for head, data in parts:
        out += b"--b\r\n" + head + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--b--\r\n"


PART = (b'Content-Disposition: form-data; name="f"', b"data")


def _pad_head(size: int) -> bytes:
    head = b'Content-Disposition: form-data; name="f"\r\nX-Pad: '
    return head + b"p" * (size - len(head))


@pytest.mark.parametrize(("name", "body", "parts", "part_bytes", "ok"), [
    ("parts_at_limit", _multipart(PART, PART), 2, 100, True),
    ("parts_one_over", _multipart(PART, PART, PART), 2, 100, False),
    ("part_at_limit", _multipart((PART[0], b"x" * 100)), 2, 100, True),
    ("part_one_over", _multipart((PART[0], b"x" * 101)), 2, 100, False),
    ("part_head_at_limit", _multipart((_pad_head(MAX_PART_HEAD_BYTES), b"x")), 2, 100, True),
    ("part_head_one_over", _multipart((_pad_head(MAX_PART_HEAD_BYTES + 1), b"x")), 2, 100, False),
    ("configured_head_at_limit", _multipart((_pad_head(100), b"x")), 2, 100, True),
    ("configured_head_one_over", _multipart((_pad_head(101), b"x")), 2, 100, False),
])
def test_multipart_limits(name, body, parts, part_bytes, ok):
    head_bytes = 100 if name.startswith("configured") else MAX_PART_HEAD_BYTES
    if ok:
        assert parse_multipart(body, "b", parts, part_bytes, head_bytes)
    else:
        with pytest.raises(FormError) as info:
            parse_multipart(body, "b", parts, part_bytes, head_bytes)
        assert info.value.reason == "input_json_limits"


def test_form_field_count_one_over_is_refused():
    assert len(parse_form(b"a=1&b=2&c=3", 3)) == 3
    with pytest.raises(FormError) as info:
        parse_form(b"a=1&b=2&c=3&d=4", 3)
    assert info.value.reason == "input_json_limits"
