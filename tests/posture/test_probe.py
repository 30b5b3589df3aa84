"""`bastion probe` against the demo (every attack refused) and against a deliberately weakened gateway."""

from __future__ import annotations

from pathlib import Path

from bastion.posture.probe import probe, table
from tests.posture.conftest import Demo, dump_doc, load_doc, running_demo


async def test_probe_passes_against_the_demo(demo: Demo):
    report = await probe(demo.config, demo.target, identity=demo.identity)
    print(table_of(report))
    assert report["summary"]["fail"] == 0, table_of(report)
    results = {(r["route"], r["attack"]): r for r in report["results"]}
    for route in ("orders/list-orders", "orders/create-order", "orders/get-order", "catalog/list-products"):
        for attack in ("no_credential", "alg_none", "foreign_key", "hs256_public_key", "expired",
                       "not_yet_valid", "wrong_issuer", "wrong_audience"):
            assert results[(route, attack)]["observed"] == 401, (route, attack)
        assert results[(route, "oversized_body")]["observed"] == 413
    # the exception EXC-DEMO-1 lets anonymous callers in, but a forged token is still refused
    assert ("catalog/status", "no_credential") not in results
    assert results[("catalog/status", "alg_none")]["result"] == "pass"
    assert results[("orders/get-order", "alg_none")]["path"] == "/orders/1"
    # the probe's own token is accepted, so the claim checks above are really what refused the forgeries
    assert results[("orders/get-order", "valid_probe_token")]["result"] == "pass"
    assert results[("orders/get-order", "valid_probe_token")]["observed"] == 200


def table_of(report: dict) -> str:
    from bastion.posture.probe import results_of

    return table(results_of(report))


def _weaken(doc: dict) -> None:
    """The running gateway drifts: identity waived on one route, a larger body limit on the orders API."""
    doc["apis"][0]["policy"] = {"traffic": {"max_body_bytes": "1MiB"}}
    created, expires = doc["exceptions"][0]["created"], doc["exceptions"][0]["expires"]
    doc["exceptions"] += [
        {"id": "EXC-WEAK-1", "target": {"api": "catalog", "route": "list-products"}, "controls": ["identity"],
         "owner": "x@example.com", "reason": "drift", "evidence": "https://t/1", "created": created,
         "expires": expires},
        {"id": "EXC-WEAK-2", "target": {"api": "orders"}, "controls": ["traffic.max_body_bytes"],
         "owner": "x@example.com", "reason": "drift", "evidence": "https://t/2", "created": created,
         "expires": expires},
    ]


async def test_probe_reports_precise_failures_against_a_weakened_gateway(tmp_path: Path):
    async with running_demo(tmp_path / "weak", _weaken) as weak:
        # the approved config: the demo's, with the same issuer and the same probe key
        strict = weak.config.parent / "approved.yaml"
        text = weak.config.read_text()
        doc = load_doc(text)
        doc["apis"][0].pop("policy")
        doc["exceptions"] = doc["exceptions"][:1]
        strict.write_text(dump_doc(doc))
        report = await probe(strict, weak.target, identity=weak.identity)
    failures = sorted((r["route"], r["attack"], r["expected"], r["observed"])
                      for r in report["results"] if r["result"] == "fail")
    forged = ("alg_none", "expired", "foreign_key", "hs256_public_key", "no_credential", "not_yet_valid",
              "wrong_audience", "wrong_issuer")
    assert failures == sorted(
        [("catalog/list-products", a, 401, 200) for a in forged]
        + [(f"orders/{r}", "oversized_body", 413, 200) for r in ("create-order", "get-order", "list-orders")]
    ), table_of(report)
    assert report["summary"]["fail"] == 11
    by_key = {(r["route"], r["attack"]): r for r in report["results"]}
    assert by_key[("catalog/list-products", "alg_none")]["detail"] == "reached the upstream"
    assert "FAIL" in table_of(report)
