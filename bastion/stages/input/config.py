"""Config model of the input layer: the request contract (OpenAPI) and injection inspection.

Every field is a control of its own (`input.paranoia`, `input.undeclared`, ...), so an exception can relax one
of them for one route without touching the others, and `validate` can tell a stricter value from a weaker one.

```yaml
classes:
  public:
    input:
      contract: enforce          # validate parameters and bodies against the OpenAPI operation
      undeclared: reject         # or strip: unknown query parameters and body properties
      max_json_depth: 16
      inspection: block          # block | detect | off
      paranoia: 2                # 1..4
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.config.base import Model, Size, control

Category = Literal["sqli", "xss", "traversal", "cmdi", "ssrf"]
CATEGORIES: tuple[Category, ...] = ("sqli", "xss", "traversal", "cmdi", "ssrf")

DEFAULT_INSPECTED_HEADERS = ("user-agent", "referer", "origin", "x-forwarded-host")


class CrsPolicy(Model):
    """`crs: {enabled: true, rules: /usr/share/modsecurity-crs/rules, paranoia: 1, inbound_threshold: 5}`: the
    OWASP Core Rule Set run by Bastion's own engine (docs/input.md). A missing or unreadable directory fails
    validate. Every field is a control: switching it off or removing rules for a route needs an exception."""

    enabled: bool = control(
        False, stricter="true",
        description="Run the CRS on every part of the request, besides Bastion's own rules (`enabled: true`).",
    )

    rules: str = control(
        "/usr/share/modsecurity-crs/rules", stricter="equal",  # another rule set is not comparable: an exception
        description="Directory with the CRS `REQUEST-9*.conf` rule files and their `.data` files (Debian's "
                    "`modsecurity-crs` by default; any CRS release's `rules/` directory works).",
    )
    paranoia: int = control(
        1, stricter="higher", ge=1, le=4, description="CRS paranoia level 1-4 (e.g. `paranoia: 2`).",
    )
    inbound_threshold: int = control(
        5, stricter="lower", ge=1,
        description="Inbound anomaly score at which CRS rule 949110 blocks (a critical rule scores 5).",
    )
    api_aware: bool = control(
        True, stricter="false",
        description="Scope the rules per field from the OpenAPI contract: typed/enum/format/pattern values are "
                    "not inspected, `x-bastion-content: html|markdown|code` strings get the families that fit.",
    )
    remove_rules: list[str] = control(
        [], stricter="subset",
        description="CRS rule ids switched off for these routes (ctl:ruleRemoveById), e.g. `[942100]`; "
                    "loosening the class baseline needs an exception naming `input.crs.remove_rules`.",
    )
    remove_targets: list[str] = control(
        [], stricter="subset",
        description="`RULE_ID;TARGET` pairs (ctl:ruleRemoveTargetById), e.g. `[\"941100;ARGS:json.body\"]`; "
                    "needs an exception naming `input.crs.remove_targets`.",
    )
    remove_tags: list[str] = control(
        [], stricter="subset",
        description="CRS rule tags switched off for these routes (ctl:ruleRemoveByTag): every rule carrying one, "
                    "e.g. `[attack-sqli]` or `[language-php]`; needs an exception naming `input.crs.remove_tags`.",
    )


class InputPolicy(Model):
    """`input: {contract: enforce, undeclared: reject, inspection: block, paranoia: 1}`"""

    contract: Literal["off", "enforce"] = control(
        "enforce", stricter="order", order=("off", "enforce"),
        description="`enforce`: parameters, Content-Type and bodies must match the route's OpenAPI operation "
                    "(400/415 otherwise). Routes without an operation only get the JSON limits and inspection.",
    )
    undeclared: Literal["allow", "strip", "reject"] = control(
        "reject", stricter="order", order=("allow", "strip", "reject"),
        description="Query parameters and JSON/form body properties the operation does not declare (and "
                    "`readOnly` properties in requests): `reject` (400), `strip` (removed before the upstream "
                    "sees the request: an injected `\"role\": \"admin\"` never arrives) or `allow`.",
    )
    max_json_depth: int = control(
        32, stricter="lower", ge=1, description="Deepest nesting of arrays/objects in a JSON body (400 above).",
    )
    max_json_string: int = control(
        64 * 1024, stricter="lower", ge=1, description="Longest JSON string value or key, in characters.",
    )
    max_json_array: int = control(
        10_000, stricter="lower", ge=1, description="Most items in one JSON array.",
    )
    max_json_keys: int = control(
        1_000, stricter="lower", ge=1, description="Most members in one JSON object.",
    )
    max_form_fields: int = control(
        256, stricter="lower", ge=1, description="Most fields in an urlencoded body or parts in a multipart body.",
    )
    max_part_bytes: Size = control(
        1024 * 1024, stricter="lower", description="Largest single multipart part (e.g. `256KiB`).",
    )
    max_part_head_bytes: Size = control(
        8 * 1024, stricter="lower", ge=1,
        description="Largest header section of one multipart part (Content-Disposition, Content-Type; a few "
                    "hundred bytes in practice), e.g. `2KiB` (400 `input_json_limits` above).",
    )
    inspection: Literal["off", "detect", "block"] = control(
        "block", stricter="order", order=("off", "detect", "block"),
        description="Injection inspection of parameter, header and body string values: `block` (400), "
                    "`detect` (audited, let through) or `off`.",
    )
    paranoia: int = control(
        1, stricter="higher", ge=1, le=4,
        description="Inspection paranoia level 1-4: higher levels add rules that catch more evasions and "
                    "raise more false positives (e.g. `paranoia: 2`).",
    )
    anomaly_threshold: int = control(
        5, stricter="lower", ge=1,
        description="Anomaly score of one value at which it counts as an attack (a critical rule scores 5).",
    )
    inspection_categories: list[Category] = control(
        list(CATEGORIES), stricter="superset",
        description="Attack classes inspected: sqli, xss, traversal, cmdi, ssrf.",
    )
    inspection_exclude: list[str] = control(
        [], stricter="subset",
        description="Values not inspected, as `query.NAME`, `path.NAME`, `header.NAME`, `cookie.NAME` or "
                    "`body./json/pointer` (e.g. `[body./article/html]`); each is an exception-grade waiver.",
    )
    crs: CrsPolicy = Field(
        default_factory=CrsPolicy,
        description="The OWASP CRS, besides Bastion's own rules: `crs: {enabled: true, paranoia: 1}` runs the "
                    "Debian CRS at paranoia 1.",
    )
    inspected_headers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INSPECTED_HEADERS),
        json_schema_extra={"stricter": "superset"},
        description="Request headers inspected besides the operation's declared header parameters.",
    )
