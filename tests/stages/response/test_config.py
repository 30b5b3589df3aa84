"""ResponsePolicy validation, and the strictness annotations the baseline checker relies on."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from bastion.governance.baseline import is_weaker
from bastion.stages.response import CorsPolicy, ResponsePolicy


@pytest.mark.parametrize(("data", "message"), [
    ({"cors": {"allow_credentials": True}}, "allow_credentials needs explicit origins"),
    ({"cors": {"allow_origins": ["*"]}}, "exact origins"),
    ({"cors": {"allow_origins": ["https://*.example.com"]}}, "exact origins"),
    ({"cors": {"allow_origins": ["null"]}}, "`null` are not allowed"),
    ({"cors": {"allow_origins": ["https://app.example.com/path"]}}, "no path"),
    ({"cors": {"allow_origins": ["app.example.com"]}}, "scheme://host"),
    ({"cors": {"allow_methods": ["*"]}}, "no `*`"),
    ({"cors": {"allow_headers": ["*"]}}, "no `*`"),
    ({"cors": {"expose_headers": ["bad header"]}}, "header"),
    ({"undeclared": "reject"}, "undeclared"),
    ({"max_filter_bytes": "lots"}, "size"),
    ({"security_headers": {"frame_options": "allow-from"}}, "frame_options"),
    ({"security_headers": {"referrer_policy": "sometimes"}}, "referrer_policy"),
    ({"security_headers": {"hsts": True}}, "hsts"),  # unknown fields are errors
])
def test_invalid(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ResponsePolicy.model_validate(data)
    assert message in str(info.value)


def test_valid_and_normalised() -> None:
    policy = ResponsePolicy.model_validate({
        "undeclared": "block", "max_filter_bytes": "4MiB",
        "security_headers": {"hsts_max_age": "180d", "hsts_include_subdomains": True},
        "cors": {"allow_origins": ["https://App.Example.com/", "http://[::1]:8080"], "allow_credentials": True,
                 "allow_methods": ["get", "put"], "allow_headers": ["Authorization"], "max_age": "10m"},
    })
    assert policy.max_filter_bytes == 4 * 1024 * 1024
    assert policy.security_headers.hsts_max_age == 180 * 86400
    assert policy.cors.allow_origins == ["https://app.example.com", "http://[::1]:8080"]
    assert policy.cors.allow_methods == ["GET", "PUT"]
    assert policy.cors.allow_headers == ["authorization"]
    assert policy.cors.max_age == 600


def _controls(model: type[BaseModel], prefix: str = "response") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            out.update(_controls(nested, f"{prefix}.{name}"))
        else:
            out[f"{prefix}.{name}"] = extra
    return out


def test_every_field_says_how_to_compare() -> None:
    controls = _controls(ResponsePolicy)
    assert all("stricter" in extra for extra in controls.values()), controls


@pytest.mark.parametrize(("control", "baseline", "declared", "weaker"), [
    ("response.undeclared", "block", "strip", True),
    ("response.undeclared", "strip", "block", False),
    ("response.undeclared", "strip", "allow", True),
    ("response.max_filter_bytes", 1024, 512, True),
    ("response.rewrite_errors", True, False, True),
    ("response.security_headers.hsts_max_age", 31536000, 86400, True),
    ("response.security_headers.nosniff", True, False, True),
    ("response.security_headers.keep_upstream_cache_control", False, True, True),
    ("response.security_headers.frame_options", "deny", "sameorigin", True),
    ("response.security_headers.referrer_policy", "no-referrer", "unsafe-url", True),
    ("response.cors.allow_origins", ["https://a.example", "https://b.example"], ["https://a.example"], False),
    ("response.cors.allow_origins", ["https://a.example"], ["https://a.example", "https://evil.example"], True),
    ("response.cors.allow_credentials", False, True, True),
    ("response.cors.allow_methods", ["GET"], ["GET", "DELETE"], True),
    ("response.cors.max_age", 600, 86400, True),
])
def test_weakening(control: str, baseline: Any, declared: Any, weaker: bool) -> None:
    extra = _controls(ResponsePolicy)[control]
    assert is_weaker(extra["stricter"], baseline, declared, extra.get("order")) is weaker


def test_cors_defaults_are_off() -> None:
    assert CorsPolicy().allow_origins == [] and not CorsPolicy().allow_credentials


def test_every_response_section_in_the_docs_is_valid() -> None:
    import re
    from pathlib import Path

    from ruamel.yaml import YAML

    text = (Path(__file__).resolve().parents[3] / "docs" / "response.md").read_text()
    found = 0

    def walk(node: Any) -> None:
        nonlocal found
        if isinstance(node, dict):
            for key, sub in node.items():
                if key == "response" and isinstance(sub, dict):
                    ResponsePolicy.model_validate(sub)
                    found += 1
                else:
                    walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)

    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        walk(YAML(typ="safe").load(block))
    assert found >= 5
