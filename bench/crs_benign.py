"""False positives of the CRS on benign API traffic: Bastion (API-aware) against libmodsecurity, per scenario
and locale, on requests generated with `faker` (twelve locales, four non-Latin scripts).

    python bench/crs_benign.py [per_cell] [paranoia]

Each scenario is a JSON POST (or a GET) to an operation whose contract is given here as an OpenAPI schema: the
fields a real API would type are typed, rich text is `x-bastion-content: html|markdown`, developer payloads are
`code`. ModSecurity sees the same requests without a contract (it cannot use one). `benign_corpus()` is
deterministic (seeded) so the CI test and this script agree.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bastion.stages.input.crs.check import apply_scope
from bastion.stages.input.crs.scope import Scope, build_scope, classify
from bench.crs_reference import Bastion, ModSecurity, Request, crs_request

LOCALES = ("en_US", "fr_FR", "de_DE", "nl_NL", "es_ES", "pl_PL", "tr_TR", "ru_RU", "el_GR", "ar_AA", "zh_CN",
           "ja_JP")
HEADERS = (("Host", "api.example"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"),
           ("Accept", "application/json"))

TEXT = {"type": "string"}
EMAIL = {"type": "string", "format": "email"}
INT = {"type": "integer"}
NUM = {"type": "number"}
DATE = {"type": "string", "format": "date"}
URI = {"type": "string", "format": "uri"}
UUID = {"type": "string", "format": "uuid"}
PHONE = {"type": "string", "pattern": "^[-+0-9 ()x.]{4,32}$"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


SCHEMAS: dict[str, dict[str, Any]] = {
    "profile": _obj(name=TEXT, email=EMAIL, phone=PHONE, birthday=DATE, website=URI, company=TEXT, job=TEXT,
                    address=_obj(street=TEXT, city=TEXT, postcode=TEXT, country=TEXT)),
    "review": _obj(product=UUID, rating=INT, title=TEXT, text=TEXT, author=TEXT),
    "order": _obj(id=UUID, customer=_obj(name=TEXT, email=EMAIL), currency={"type": "string", "enum": ["EUR", "USD"]},
                  items={"type": "array", "items": _obj(sku=TEXT, name=TEXT, qty=INT, price=NUM)},
                  note=TEXT, ship_to=TEXT),
    "ticket": _obj(subject=TEXT, body=TEXT, log={"type": "string", "x-bastion-content": "code"}, priority=INT,
                   reporter=EMAIL),
    "richtext": _obj(title=TEXT, html={"type": "string", "x-bastion-content": "html"}),
    "markdown": _obj(title=TEXT, markdown={"type": "string", "x-bastion-content": "markdown"}),
    "devtools": _obj(name=TEXT, script={"type": "string", "x-bastion-content": "code"},
                     query={"type": "string", "x-bastion-content": "code"}, description=TEXT),
}
FREE_TEXT_FIELDS = {"profile", "review", "order"}  # scenarios without code or rich text fields

_SHELL = ["for f in *.log; do gzip \"$f\"; done", "curl -s https://api.example/v1/items | jq '.[] | .id'",
          "find . -name '*.pyc' -delete && rm -rf build/", "cat /etc/os-release; uname -a",
          "docker run --rm -v $(pwd):/src alpine sh -c 'ls /src'", "ps aux | grep python | awk '{print $2}'"]
_SQL = ["SELECT id, name FROM users WHERE email = 'a@b.example' AND deleted_at IS NULL;",
        "UPDATE orders SET status = 'shipped' WHERE id IN (1, 2, 3);",
        "SELECT count(*) FROM events GROUP BY date_trunc('day', created_at) HAVING count(*) > 10;",
        "INSERT INTO tags (name) VALUES ('o''brien') ON CONFLICT DO NOTHING;"]
_LOGS = ["2026-11-02T10:15:02Z ERROR Timeout after 30s waiting for upstream db-1:5432",
         "WARN [pool-3] connection reset by peer (retry 2/5)",
         "Traceback (most recent call last):\n  File \"app.py\", line 42, in handler\nKeyError: 'user_id'",
         "GET /api/v1/items?page=2 HTTP/1.1\" 502 0 \"-\" \"curl/8.4\""]


def _profile(f: Any, r: random.Random) -> dict[str, Any]:
    return {"name": f.name(), "email": f.email(), "phone": f.phone_number(), "birthday": f.date(),
            "website": f.url(), "company": f.company(), "job": f.job(),
            "address": {"street": f.street_address(), "city": f.city(), "postcode": f.postcode(),
                        "country": f.country()}}


def _review(f: Any, r: random.Random) -> dict[str, Any]:
    return {"product": str(f.uuid4()), "rating": r.randint(1, 5), "title": f.sentence(),
            "text": f.paragraph(nb_sentences=r.randint(2, 6)), "author": f.first_name()}


def _order(f: Any, r: random.Random) -> dict[str, Any]:
    return {"id": str(f.uuid4()), "customer": {"name": f.name(), "email": f.email()},
            "currency": r.choice(["EUR", "USD"]),
            "items": [{"sku": f"SKU-{r.randint(1000, 9999)}", "name": f.word(), "qty": r.randint(1, 9),
                       "price": round(r.uniform(1, 200), 2)} for _ in range(r.randint(1, 6))],
            "note": f.sentence(), "ship_to": f.address()}


def _ticket(f: Any, r: random.Random) -> dict[str, Any]:
    return {"subject": f.sentence(nb_words=6), "body": f.paragraph() + " " + r.choice(
        ["It fails with: Timeout after 30s.", "Error 502 since this morning.", "Please call me back."]),
        "log": "\n".join(r.sample(_LOGS, 2)), "priority": r.randint(1, 4), "reporter": f.email()}


def _richtext(f: Any, r: random.Random) -> dict[str, Any]:
    paragraphs = "".join(f"<p>{f.paragraph()} &amp; <b>{f.word()}</b> &ndash; <a href=\"{f.url()}\">"
                         f"{f.word()}</a></p>" for _ in range(r.randint(1, 3)))
    return {"title": f.sentence(), "html": f"<h2>{f.sentence()}</h2>{paragraphs}<img src=\"{f.image_url()}\" "
                                           f"alt=\"{f.word()}\">"}


def _markdown(f: Any, r: random.Random) -> dict[str, Any]:
    code = r.choice(_SHELL)
    return {"title": f.sentence(), "markdown": f"# {f.sentence()}\n\n{f.paragraph()} Run `{code}` first.\n\n"
                                               f"```bash\n{code}\n```\n\n> {f.sentence()}\n\n* [{f.word()}]({f.url()})"}


def _devtools(f: Any, r: random.Random) -> dict[str, Any]:
    return {"name": f.word(), "script": r.choice(_SHELL), "query": r.choice(_SQL), "description": f.sentence()}


SCENARIOS: dict[str, Callable[[Any, random.Random], dict[str, Any]]] = {
    "profile": _profile, "review": _review, "order": _order, "ticket": _ticket, "richtext": _richtext,
    "markdown": _markdown, "devtools": _devtools,
}


def benign_corpus(per_cell: int = 10, seed: int = 14) -> list[tuple[str, str, Request, dict[str, Any]]]:
    """(scenario, locale, request, document) for every scenario x locale, `per_cell` each."""
    from faker import Faker

    out = []
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(seed)
        rnd = random.Random(f"{seed}-{locale}")
        for scenario, make in SCENARIOS.items():
            for _ in range(per_cell):
                doc = make(fake, rnd)
                body = orjson.dumps(doc)
                req = Request("POST", f"/api/{scenario}", (*HEADERS, ("Content-Type", "application/json"),
                                                           ("Content-Length", str(len(body)))), body,
                              f"{scenario}/{locale}")
                out.append((scenario, locale, req, doc))
    return out


SCOPES: dict[str, Scope] = {name: build_scope(schema) for name, schema in SCHEMAS.items()}


def bastion_blocks(engine: Bastion, scenario: str, req: Request, doc: dict[str, Any]) -> bool:
    """Bastion with API-aware scoping: the request checked against its scenario's contract."""
    request = crs_request(req)
    tags = apply_scope(request, classify(doc, SCOPES[scenario]))
    return engine.engine.evaluate(request, tag_targets=tags).denied_by is not None


def main() -> None:
    per_cell = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    paranoia = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    corpus = benign_corpus(per_cell)
    modsec, ours = ModSecurity(paranoia), Bastion(paranoia)
    total: Counter[tuple[str, str]] = Counter()
    ref: Counter[tuple[str, str]] = Counter()
    bas: Counter[tuple[str, str]] = Counter()
    raw: Counter[tuple[str, str]] = Counter()
    for scenario, locale, req, doc in corpus:
        total[scenario, locale] += 1
        ref[scenario, locale] += modsec.run(req)[0]
        bas[scenario, locale] += bastion_blocks(ours, scenario, req, doc)
        raw[scenario, locale] += ours.run(req)[0]  # no contract: only the Unicode-correct decoding differs

    def rate(counter: Counter[tuple[str, str]], keep: Callable[[tuple[str, str]], bool]) -> str:
        n = sum(v for k, v in total.items() if keep(k))
        return f"{sum(v for k, v in counter.items() if keep(k)) / n:.1%}" if n else "-"

    print(f"paranoia {paranoia}, {len(corpus)} requests ({per_cell} per scenario and locale)\n")
    def row(label: str, keep: Callable[[tuple[str, str]], bool]) -> str:
        return f"| {label} | {rate(ref, keep)} | {rate(raw, keep)} | {rate(bas, keep)} |"

    head = "| {} | ModSecurity | Bastion, no contract | Bastion, API-aware |\n|---|---:|---:|---:|"
    print(head.format("scenario"))
    for scenario in SCENARIOS:
        print(row(scenario, lambda k, s=scenario: k[0] == s))  # type: ignore[misc]
    print(row("**all**", lambda k: True))
    print(row("outside code/rich-text scenarios", lambda k: k[0] in FREE_TEXT_FIELDS))
    print("\n" + head.format("locale"))
    for locale in LOCALES:
        print(row(locale, lambda k, loc=locale: k[1] == loc))  # type: ignore[misc]


if __name__ == "__main__":
    main()
