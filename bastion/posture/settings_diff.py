"""The config outside route policies, for `bastion diff`: classes, APIs, providers, consumers and keys, gateway
settings, detection, audit and exceptions, each change classified weaker, stricter or neutral ("changed").

The settings are flattened into paths (`providers.jwt[corp].audiences`, `consumers[acme].credentials[k1]`); a list
of named objects is keyed by name, so adding one provider is one change. The classification is one table of
path patterns, first match wins: what widens trust (a newly trusted issuer, key, consumer, CIDR or exception) is
weaker, whatever the reviewer might think of it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bastion.config.models import SECTIONS, Baseline
from bastion.governance.baseline import is_weaker

Classifier = Callable[[Any, Any], str]
_SECRET = ("secret", "password")
_KEYS = ("name", "id", "client_id", "issuer", "path", "url")


def settings(cfg: Any) -> dict[str, Any]:
    """The non-route config as plain data, secrets replaced by a short digest (a change still shows)."""
    data = cfg.model_dump(mode="json")
    apis = [{k: v for k, v in api.items() if k not in ("routes", "policy")} for api in data.get("apis", [])]
    keep = {name: data[name] for name in ("gateway", "classes", "providers", "consumers", "exceptions")}
    out: dict[str, Any] = _redact({**keep, "apis": apis})
    return out


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if value is not None and any(s in key.lower() for s in _SECRET):
        return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]
    return value


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """`{path: leaf}`; named objects in lists are keyed `[name]`, other lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if path:
            out[path] = "present"  # the object itself: adding or removing it is one change
        for k, v in value.items():
            out.update(flatten(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) and _name(v) for v in value):
        for item in value:
            out.update(flatten(item, f"{path}[{_name(item)}]"))
        return out
    out[path] = value
    return out


def _name(item: dict[str, Any]) -> str | None:
    for key in _KEYS:
        if isinstance(item.get(key), str | int) and item.get(key) != "":
            return str(item[key])
    return None


def grow(before: Any, after: Any) -> str:
    """More items (or a larger number) is weaker: audiences, algorithms, CIDRs, roles, limits, timeouts."""
    if isinstance(before, list) or isinstance(after, list):
        b, a = set(map(str, before or [])), set(map(str, after or []))
        return "weaker" if a - b else ("stricter" if b - a else "changed")
    if isinstance(before, int | float) and isinstance(after, int | float):
        return "weaker" if after > before else "stricter"
    return "changed"


def allowlist(before: Any, after: Any) -> str:
    """A list where empty means "anyone" (a consumer's networks): emptying it is weaker, starting one stricter."""
    if not before and after:
        return "stricter"
    if before and not after:
        return "weaker"
    return grow(before, after)


def shrink(before: Any, after: Any) -> str:
    """Fewer items (or a smaller number) is weaker: required claims, stripped headers, a minimum rate."""
    kind = grow(before, after)
    return {"weaker": "stricter", "stricter": "weaker"}.get(kind, kind)


def presence(before: Any, after: Any) -> str:
    """A new object (issuer, consumer, key, exception) is trust granted: weaker; one removed is stricter."""
    if before is None:
        return "weaker"
    return "stricter" if after is None else "changed"


def absence(before: Any, after: Any) -> str:
    """An object whose removal is weaker (an audit sink, admin authentication)."""
    return {"weaker": "stricter", "stricter": "weaker"}.get(presence(before, after), "changed")


def on(before: Any, after: Any) -> str:
    """A protection switched off is weaker."""
    return "weaker" if before and not after else ("stricter" if after and not before else "changed")


def off(before: Any, after: Any) -> str:
    """A risk switched on is weaker (`allow_insecure_http`, `revoked: false`)."""
    return shrink(bool(before), bool(after)) if before != after else "changed"


def later(before: Any, after: Any) -> str:
    """A later expiry is weaker."""
    try:
        b = datetime.fromisoformat(str(before).replace("Z", "+00:00"))
        a = datetime.fromisoformat(str(after).replace("Z", "+00:00"))
    except ValueError:
        return "weaker" if after is None else "changed"
    return "weaker" if a > b else "stricter"


def anchor(before: Any, after: Any) -> str:
    """Where keys come from (issuer, JWKS, discovery): any change trusts someone new."""
    return "weaker"


def neutral(before: Any, after: Any) -> str:
    return "changed"


# (path pattern, classifier), first match wins; `*` matches within one path part (`[name]` or `.field`)
RULES: tuple[tuple[str, Classifier], ...] = (
    ("providers.*[*]", presence),
    ("providers.*[*].issuer", anchor), ("providers.*[*].jwks_*", anchor), ("providers.*[*].discovery", anchor),
    ("providers.*[*].url", anchor), ("providers.*[*].jwks_file", anchor),
    ("providers.*[*].allow_*", off),
    ("providers.*[*].required_claims", shrink), ("providers.*[*].typ", grow),
    ("providers.*[*].audiences", grow), ("providers.*[*].algorithms", grow), ("providers.*[*].leeway", grow),
    ("providers.*[*].max_*", grow),
    ("consumers[*]", presence),
    ("consumers[*].credentials[*]", presence), ("consumers[*].credentials[*].revoked", off),
    ("consumers[*].credentials[*].expires", later), ("consumers[*].credentials[*].key_sha256", anchor),
    ("consumers[*].credentials", grow),  # credentials without ids, as one list
    ("consumers[*].networks", allowlist), ("consumers[*].roles", grow), ("consumers[*].scopes", grow),
    ("exceptions[*]", presence), ("exceptions[*].expires", later), ("exceptions[*].controls", grow),
    ("exceptions[*].target.*", anchor),
    ("gateway.trusted_proxies", grow), ("gateway.identity_headers", shrink),
    ("gateway.admin.auth", absence), ("gateway.admin.auth.*", neutral), ("gateway.admin.enabled", neutral),
    ("gateway.limits.min_body_rate", shrink), ("gateway.limits.*", grow), ("gateway.http2.*", grow),
    ("gateway.max_exception_days", grow),
    ("gateway.audit.sinks[*]", absence), ("gateway.audit.sinks", shrink),
    ("gateway.audit.detections.enabled", on), ("gateway.audit.detections.*.enabled", on),
    ("gateway.audit.detections.never_block", grow), ("gateway.audit.detections.*.block", shrink),
    ("gateway.audit.detections.*.block_for", shrink), ("gateway.audit.detections.*.threshold", grow),
    ("gateway.audit.detections.*.per_*", grow), ("gateway.audit.detections.*.factor", grow),
    ("gateway.drift", absence),
    ("apis[*]", neutral), ("apis[*].hosts", grow),
)


def _pattern(glob: str) -> re.Pattern[str]:
    # a name in brackets may hold dots (a sink's path); a field name may not
    escaped = re.escape(glob).replace(r"\[\*\]", r"\[[^\]]*\]").replace(r"\*", r"[^.\[\]]*")
    return re.compile("^" + escaped + "$")


_RULES = tuple((_pattern(glob), rule) for glob, rule in RULES)


def _section(path: str) -> str:
    if path.startswith("gateway.audit.detections"):
        return "detection"
    if path.startswith("gateway.audit"):
        return "audit"
    return path.split(".", 1)[0].split("[", 1)[0]


def _class_rule(path: str) -> Classifier | None:
    """`classes.<name>.<section>.<field>`: the field's own `stricter=` annotation, as for routes."""
    parts = path.split(".")
    if len(parts) != 4 or parts[2] not in SECTIONS:
        return None
    model = Baseline.model_fields[parts[2]].annotation
    info = getattr(model, "model_fields", {}).get(parts[3])
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    stricter, order = extra.get("stricter"), extra.get("order")
    if stricter is None or stricter == "free":
        return None

    def classify(before: Any, after: Any) -> str:
        if is_weaker(stricter, before, after, order):
            return "weaker"
        return "stricter" if is_weaker(stricter, after, before, order) else "changed"
    return classify


def classify(path: str, before: Any, after: Any) -> str:
    rule = _class_rule(path) if path.startswith("classes.") else None
    if rule is None:
        rule = next((r for pattern, r in _RULES if pattern.match(path)), neutral)
    return rule(before, after)


def compare(approved: dict[str, Any], other: dict[str, Any]) -> list[tuple[str, str, str, Any, Any]]:
    """`(section, path, kind, before, after)` for each setting that differs; an added or removed object is one
    change (its fields are not listed again)."""
    a, b = flatten(approved), flatten(other)
    out = []
    gone: list[str] = []
    for path in sorted(set(a) | set(b)):
        if any(path.startswith(g + ".") or path.startswith(g + "[") for g in gone):
            continue
        before, after = a.get(path), b.get(path)
        if before == after:
            continue
        if (before is None) != (after is None) and "present" in (before, after):
            gone.append(path)
        out.append((_section(path), path, classify(path, before, after), before, after))
    return out
