"""`bastion probe` against the demo (every attack refused) and against a deliberately weakened gateway."""

from __future__ import annotations

from pathlib import Path

from bastion.config.loader import load_config
from bastion.posture.probe import probe, table
from tests.posture.conftest import dump_doc, load_doc, running_demo, with_owner_routes


async def test_probe_passes_against_the_demo(tmp_path: Path):
    async with running_demo(tmp_path / "demo", with_owner_routes) as demo:
        report = await probe(demo.config, demo.target, identity=demo.identity)
    print(table_of(report))
    assert report["summary"]["fail"] == 0, table_of(report)
    results = {(r["route"], r["attack"]): r for r in report["results"]}
    for route in ("orders/list-orders", "orders/create-order", "orders/get-order", "catalog/list-products",
                  "orders/get-invoice", "catalog/list-favourites"):
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
    # BOLA: the probe's token names order 1 and asks for order 2; its own order 1 is served
    bola = results[("orders/get-invoice", "bola:path.order_id")]
    assert (bola["path"], bola["expected"], bola["observed"], bola["result"]) == ("/orders/2/invoice", 403, 403,
                                                                                  "pass")
    assert bola["detail"] == "The caller may not access this object."
    own = results[("orders/get-invoice", "valid_probe_token")]
    assert (own["path"], own["observed"], own["control"]) == ("/orders/1/invoice", 200, "authz.owner (own object)")
    favourites = results[("catalog/list-favourites", "bola:query.customer")]
    assert (favourites["observed"], favourites["result"]) == (403, "pass")
    assert results[("catalog/list-favourites", "valid_probe_token")]["observed"] == 200
    assert not any(a.startswith("bola") for route, a in results if route != "orders/get-invoice"
                   and route != "catalog/list-favourites")


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


def _weaken_with_owner(doc: dict) -> None:
    """As `_weaken`, on the demo with owner routes, and the owner rule of orders/get-invoice removed."""
    with_owner_routes(doc)
    _weaken(doc)
    doc["apis"][0]["routes"][-1]["policy"]["authz"].pop("owner")


async def test_probe_reports_precise_failures_against_a_weakened_gateway(tmp_path: Path):
    async with running_demo(tmp_path / "weak", _weaken_with_owner) as weak:
        # the approved config: the demo's, with the same issuer and the same probe key
        strict = weak.config.parent / "approved.yaml"
        text = weak.config.read_text()
        doc = load_doc(text)
        doc["apis"][0].pop("policy")
        doc["exceptions"] = doc["exceptions"][:1]
        doc["apis"][0]["routes"][-1]["policy"]["authz"]["owner"] = [{"from": "path.order_id", "in": "claim:orders"}]
        strict.write_text(dump_doc(doc))
        report = await probe(strict, weak.target, identity=weak.identity)
    failures = sorted((r["route"], r["attack"], r["expected"], r["observed"])
                      for r in report["results"] if r["result"] == "fail")
    forged = ("alg_none", "expired", "foreign_key", "hs256_public_key", "no_credential", "not_yet_valid",
              "wrong_audience", "wrong_issuer")
    assert failures == sorted(
        [("catalog/list-products", a, 401, 200) for a in forged]
        + [(f"orders/{r}", "oversized_body", 413, 403 if r == "create-order" else 200)  # 403: the demo's
           for r in ("create-order", "get-invoice", "get-order", "list-orders")]  # purchase flow (no browse)
        + [("orders/get-invoice", "bola:path.order_id", 403, 200)]
    ), table_of(report)
    assert report["summary"]["fail"] == 13
    by_key = {(r["route"], r["attack"]): r for r in report["results"]}
    assert by_key[("catalog/list-products", "alg_none")]["detail"] == "reached the upstream"
    # another caller's order reached the upstream; the probe's own order is still served, so the pass of every
    # other control on that route is real
    bola = by_key[("orders/get-invoice", "bola:path.order_id")]
    assert (bola["path"], bola["detail"]) == ("/orders/2/invoice", "reached the upstream")
    assert by_key[("orders/get-invoice", "valid_probe_token")]["result"] == "pass"
    assert "FAIL" in table_of(report)


async def test_the_probe_finds_the_identity_its_config_trusts(tmp_path: Path) -> None:
    """Out of the box against the demo: the probe key beside the trusted JWKS is found and used, so the
    attacks that need a valid token run instead of being skipped."""
    from bastion.posture.tokens import discover_identity

    async with running_demo(tmp_path / "demo") as demo:
        loaded = load_config(demo.config)
        found = discover_identity(loaded.model.providers.jwt, loaded.path.parent)
        assert found is not None and found.provider == "bastion-probe"
        with_key = await probe(demo.config, demo.target, identity=found)
        without = await probe(demo.config, demo.target)
    assert with_key["summary"]["fail"] == 0
    assert with_key["summary"]["skip"] < without["summary"]["skip"]
    assert with_key["summary"]["pass"] > without["summary"]["pass"]
