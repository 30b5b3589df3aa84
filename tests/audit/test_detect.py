"""Each detection against a scripted attack (and its response), and legitimate bursts that do not trigger."""

from __future__ import annotations

import asyncio
import json

from bastion.audit.blocks import BlockList
from bastion.audit.config import (
    AuditConfig,
    CredentialStuffingRule,
    DetectionsConfig,
    UsageAnomalyRule,
    WebhookConfig,
)
from bastion.audit.detect import Detector, Webhook
from bastion.audit.log import AuditLog, SinkSpec
from bastion.audit.ocsf import validate
from bastion.audit.sinks.file import FileSink
from bastion.context import Deny, Identity
from tests.audit.helpers import ALICE, auth_deny, context, deny
from tests.audit.receivers import HttpCollector

T0 = 1_800_000_000.0
ATTACKER = "198.51.100.66"


class Harness:
    """A detector over a real audit log (file sink) and a block list, on a scripted clock."""

    def __init__(self, tmp_path, config: DetectionsConfig | None = None, webhook: Webhook | None = None) -> None:
        self.path = tmp_path / "audit.jsonl"
        self.audit = AuditLog([SinkSpec(FileSink("file", self.path, 1 << 30, 0))], spool_dir=tmp_path / "spool")
        self.now = T0
        self.blocks = BlockList(audit=self.audit, clock=lambda: self.now)
        self.detector = Detector(config or DetectionsConfig(), self.audit, self.blocks, webhook)

    def request(self, status: int, denial: Deny | None = None, dt: float = 0.1, **ctx_args):
        self.now += dt
        ctx = context(start=self.now, **ctx_args)
        self.detector.observe(ctx, status, denial)
        return ctx

    async def findings(self) -> list[dict]:
        await self.audit.close()
        if not self.path.exists():
            return []
        events = [json.loads(line) for line in self.path.read_text().splitlines()]
        return [e for e in events if e["class_uid"] == 2004]


async def test_credential_stuffing_blocks_the_source(tmp_path):
    h = Harness(tmp_path)
    await h.audit.start()
    record, bad_key = auth_deny("api_key_invalid")
    for i in range(19):
        h.request(401, bad_key, ip=ATTACKER, records=(record,), path=f"/orders/{i}")
    assert h.blocks.is_blocked(ATTACKER) is None  # 19 failures: below the threshold
    h.request(401, bad_key, ip=ATTACKER, records=(record,))
    assert "credential_stuffing" in (h.blocks.is_blocked(ATTACKER) or "")
    decision = await h.blocks.check(context(ip=ATTACKER, start=h.now))
    assert isinstance(decision, Deny) and (decision.status, decision.reason) == (403, "blocked")
    assert dict(decision.headers)["retry-after"] == "900"
    assert isinstance(await h.blocks.check(context(ip="203.0.113.1", start=h.now)), type(None)) is False
    assert h.blocks.is_blocked("203.0.113.1") is None  # others are not
    # blocked requests do not feed the detectors again
    h.detector.observe(context(ip=ATTACKER, start=h.now), 403, decision)
    [finding] = await h.findings()
    assert validate(finding) == []
    bastion = finding["unmapped"]["bastion"]
    assert (bastion["detection"], bastion["key_kind"], bastion["key"], bastion["count"]) == \
        ("credential_stuffing", "ip", ATTACKER, 20)
    assert bastion["responses"][0] == {"action": "block", "kind": "ip", "key": ATTACKER, "until": h.now + 900}
    assert finding["finding_info"]["attacks"][0]["technique"]["uid"] == "T1110.004"
    assert h.audit.metrics.registry.get_sample_value("bastion_detections_total",
                                                     {"detection": "credential_stuffing"}) == 1
    assert h.audit.metrics.registry.get_sample_value("bastion_blocks_active", {"kind": "ip"}) == 1


async def test_brute_force_on_one_subject_from_many_addresses(tmp_path):
    config = DetectionsConfig(credential_stuffing=CredentialStuffingRule(block=["subject"]))
    h = Harness(tmp_path, config)
    await h.audit.start()
    record, revoked = auth_deny("credential_revoked")
    victim = Identity(method="jwt", subject="bob")
    for i in range(10):  # one failure each from ten addresses: no IP crosses its threshold
        h.request(401, revoked, ip=f"203.0.113.{i}", identity=victim, records=(record,))
    assert "credential_stuffing" in (h.blocks.is_blocked(None, subject="bob") or "")
    [finding] = await h.findings()
    assert finding["unmapped"]["bastion"]["key_kind"] == "subject"


async def test_legitimate_burst_and_a_few_failures_do_not_trigger(tmp_path):
    h = Harness(tmp_path)
    await h.audit.start()
    record, expired = auth_deny("jwt_expired")
    _, missing = auth_deny("jwt_missing")
    for i in range(2000):  # a busy client: 2000 requests in 20 s, its own objects
        h.request(200, dt=0.01, ip="203.0.113.20", identity=ALICE, path=f"/orders/{i}")
    for _ in range(5):  # tokens expire now and then; the client refreshes
        h.request(401, expired, ip="203.0.113.20", records=(record,))
    for _ in range(50):  # a misconfigured client without credentials is not an attack on credentials
        h.request(401, missing, ip="203.0.113.21")
    for i in range(10):  # a few objects that do not exist
        h.request(404, ip="203.0.113.20", identity=ALICE, path=f"/orders/missing-{i}")
    assert await h.findings() == []
    assert h.blocks.is_blocked("203.0.113.20", "alice", "web-app") is None


async def test_object_enumeration_blocks_the_caller(tmp_path):
    h = Harness(tmp_path)
    await h.audit.start()
    record, forbidden = deny("authz", "object_forbidden", 403)
    mallory = Identity(method="jwt", subject="mallory", consumer="web-app")
    for i in range(29):
        status, denial = (403, forbidden) if i % 2 else (404, None)  # authz 403s and upstream 404s
        h.request(status, denial, identity=mallory, records=(record,) if denial else (), path=f"/orders/{1000 + i}")
    for _ in range(10):  # the same object again and again is not enumeration
        h.request(404, identity=mallory, path="/orders/1000")
    assert h.blocks.is_blocked(None, subject="mallory") is None
    h.request(404, identity=mallory, path="/orders/5000")
    assert "enumeration" in (h.blocks.is_blocked(ATTACKER, subject="mallory") or "")
    assert h.blocks.is_blocked(None, consumer="web-app") is None  # the partner app itself is not blocked
    decision = await h.blocks.check(context(identity=mallory, start=h.now))
    assert isinstance(decision, Deny) and decision.reason == "blocked"
    [finding] = await h.findings()
    assert validate(finding) == []
    assert finding["unmapped"]["bastion"]["count"] == 30
    assert finding["unmapped"]["bastion"]["responses"][0]["kind"] == "subject"


async def test_usage_anomaly_against_the_callers_own_baseline(tmp_path):
    rule = UsageAnomalyRule(threshold=300, window=60, factor=10, baseline=600, warmup=600)
    h = Harness(tmp_path, DetectionsConfig(usage_anomaly=rule))
    await h.audit.start()
    steady = Identity(method="api_key", subject="billing", consumer="billing")
    busy = Identity(method="api_key", subject="reports", consumer="reports")
    for _ in range(1200):  # 20 minutes at 1 request/s each; `reports` is busy at 8/s all along
        h.request(200, dt=1.0, identity=steady)
        for _ in range(8):
            h.request(200, dt=0.0, identity=busy)
    assert await _findings_so_far(h) == []  # a high but usual rate is no anomaly
    for _ in range(1500):  # then `billing` suddenly runs at 50/s
        h.request(200, dt=0.02, identity=steady)
    findings = await h.findings()
    assert [f["unmapped"]["bastion"]["key"] for f in findings] == ["billing"]
    assert findings[0]["unmapped"]["bastion"]["rate"] >= 10 * findings[0]["unmapped"]["bastion"]["baseline"]
    assert h.blocks.is_blocked(None, subject="billing") is None  # alert only by default


async def _findings_so_far(h: Harness) -> list[dict]:
    await asyncio.sleep(0.05)
    h.audit._dispatch()
    await asyncio.sleep(0.05)
    if not h.path.exists():
        return []
    return [e for e in map(json.loads, h.path.read_text().splitlines()) if e["class_uid"] == 2004]


async def test_input_violation_burst_alerts(tmp_path):
    h = Harness(tmp_path)
    await h.audit.start()
    record, invalid = deny("input", "input_invalid_body", 400)
    for _ in range(20):
        h.request(400, invalid, method="POST", ip=ATTACKER, identity=ALICE, records=(record,))
    [finding] = await h.findings()
    assert finding["unmapped"]["bastion"]["detection"] == "input_violations"
    assert finding["unmapped"]["bastion"]["responses"] == []


async def test_forged_tokens_block_and_call_the_webhook(tmp_path):
    collector = await HttpCollector(token="hook-token").start()
    try:
        webhook = Webhook(WebhookConfig(url=f"http://127.0.0.1:{collector.port}/hook"), "hook-token")
        h = Harness(tmp_path, webhook=webhook)
        await h.audit.start()
        record, forged = auth_deny("jwt_bad_signature")
        _, none_alg = auth_deny("jwt_alg_not_allowed")
        h.request(401, forged, ip=ATTACKER, records=(record,))
        h.request(401, none_alg, ip=ATTACKER, records=(record,))
        assert h.blocks.is_blocked(ATTACKER) is None
        h.request(401, forged, ip=ATTACKER, records=(record,), dt=300)
        assert "forged_tokens" in (h.blocks.is_blocked(ATTACKER) or "")
        for _ in range(100):
            if collector.raw:
                break
            await asyncio.sleep(0.02)
        [posted] = collector.raw
        assert posted["class_uid"] == 2004 and posted["unmapped"]["bastion"]["detection"] == "forged_tokens"
        assert webhook.sent == 1
        findings = await h.findings()
        assert [f["unmapped"]["bastion"]["detection"] for f in findings] == ["forged_tokens"]
    finally:
        await collector.stop()


async def test_never_block_list_and_from_config(tmp_path):
    config = AuditConfig.model_validate({"detections": {"never_block": [ATTACKER]},
                                         "responses": {"max_active_blocks": 5}})
    h = Harness(tmp_path)
    blocks = h.blocks
    detector = Detector.from_config(config, h.audit, blocks)
    assert blocks.max_blocks == 5
    await h.audit.start()
    record, bad = auth_deny("api_key_invalid")
    for _ in range(20):
        h.now += 0.1
        detector.observe(context(ip=ATTACKER, records=(record,), start=h.now), 401, bad)
    assert blocks.is_blocked(ATTACKER) is None
    [finding] = await h.findings()
    assert finding["unmapped"]["bastion"]["responses"] == [
        {"action": "none", "kind": "ip", "key": ATTACKER, "why": "never_block"}]


async def test_business_flow_violations_block_the_scripted_caller(tmp_path):
    h = Harness(tmp_path)
    await h.audit.start()
    record, out_of_order = deny("flows", "flow_order", 403)
    scripted = Identity(method="jwt", subject="bot-7", consumer="web-app")
    for _ in range(4):
        h.request(403, out_of_order, identity=scripted, records=(record,), path="/orders/checkout")
    assert h.blocks.is_blocked(None, subject="bot-7") is None
    h.request(429, deny("flows", "flow_limit", 429)[1], identity=scripted, records=(record,))
    assert "flow_abuse" in (h.blocks.is_blocked(None, subject="bot-7") or "")
    [finding] = await h.findings()
    assert validate(finding) == []
    assert finding["unmapped"]["bastion"]["detection"] == "flow_abuse"

async def _two_processes_feed_one_detection(tmp_path, state) -> tuple[list[dict], list[dict]]:
    """Two detectors (two workers or nodes) over one shared state: 10 + 9 failures, then the 20th."""
    config = DetectionsConfig(credential_stuffing=CredentialStuffingRule(threshold=20, window=60))
    one, two = Harness(tmp_path / "one", config), Harness(tmp_path / "two", config)
    for h in (one, two):
        h.detector.share(state)
        await h.audit.start()
    record, bad = auth_deny("api_key_invalid")
    for i in range(19):
        (one if i % 2 else two).request(401, bad, ip=ATTACKER, records=(record,))
        await asyncio.sleep(0.01)  # the shared count is asynchronous
    await asyncio.sleep(0.1)
    assert one.detector.findings == two.detector.findings == 0  # 19 in all: below the threshold
    one.request(401, bad, ip=ATTACKER, records=(record,))
    two.request(401, bad, ip=ATTACKER, records=(record,))  # the 21st: the finding fires once, not twice
    await asyncio.sleep(0.1)
    return await one.findings(), await two.findings()


async def test_a_detection_fed_by_two_processes_fires_once_at_the_threshold_with_redis(tmp_path, redis_server):
    from bastion.state.redis_state import RedisState

    state = RedisState(redis_server.url)
    try:
        first, second = await _two_processes_feed_one_detection(tmp_path, state)
    finally:
        await state.close()
    assert len(first) + len(second) == 1
    assert (first or second)[0]["finding_info"]["analytic"]["name"] == "credential_stuffing"


async def test_a_detection_fed_by_two_workers_fires_once_through_the_supervisor(tmp_path):
    from tests.state.test_supervised import supervised_state

    async with supervised_state(tmp_path) as (state, _):
        first, second = await _two_processes_feed_one_detection(tmp_path, state)
    assert len(first) + len(second) == 1

async def _two_processes_enumerate(tmp_path, state) -> tuple[list[dict], list[dict], list[Harness]]:
    """Two detectors over one shared state: 29 distinct objects refused (and repeats), then the 30th and 31st."""
    one, two = Harness(tmp_path / "one"), Harness(tmp_path / "two")
    for h in (one, two):
        h.detector.share(state)
        await h.audit.start()
    mallory = Identity(method="jwt", subject="mallory", consumer="web-app")
    for i in range(29):  # each object refused by one of them: 14 and 15, far below 30 for each alone
        (one if i % 2 else two).request(404, identity=mallory, path=f"/orders/{1000 + i}")
        await asyncio.sleep(0.01)  # the shared count is asynchronous
    for i in range(10):  # the same objects again, on the other one: not new, not counted
        (two if i % 2 else one).request(404, identity=mallory, path=f"/orders/{1000 + i}")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert one.detector.findings == two.detector.findings == 0  # 29 distinct objects: below the threshold
    one.request(404, identity=mallory, path="/orders/5000")
    await asyncio.sleep(0.05)
    two.request(404, identity=mallory, path="/orders/5001")  # the 31st: still one finding, not two
    await asyncio.sleep(0.1)
    return await one.findings(), await two.findings(), [one, two]


async def test_enumeration_spread_over_two_nodes_fires_once_at_the_threshold_with_redis(tmp_path, redis_server):
    from bastion.state.redis_state import RedisState

    state = RedisState(redis_server.url)
    try:
        first, second, harnesses = await _two_processes_enumerate(tmp_path, state)
    finally:
        await state.close()
    assert len(first) + len(second) == 1
    assert (first or second)[0]["unmapped"]["bastion"]["detection"] == "enumeration"
    assert "enumeration" in (harnesses[0].blocks.is_blocked(None, subject="mallory") or "")


async def test_enumeration_spread_over_two_workers_fires_once_through_the_supervisor(tmp_path):
    from tests.state.test_supervised import supervised_state

    async with supervised_state(tmp_path) as (state, _):
        first, second, _ = await _two_processes_enumerate(tmp_path, state)
    assert len(first) + len(second) == 1


async def test_usage_anomaly_spread_over_two_workers_fires_once_at_the_threshold(tmp_path, redis_server):
    from bastion.state.redis_state import RedisState

    rule = UsageAnomalyRule(threshold=20, window=60, factor=2, baseline=1, warmup=0)
    config = DetectionsConfig(usage_anomaly=rule)
    one, two = Harness(tmp_path / "one", config), Harness(tmp_path / "two", config)
    state = RedisState(redis_server.url)
    try:
        for h in (one, two):
            h.detector.share(state)
            await h.audit.start()
        reports = Identity(method="api_key", subject="reports", consumer="reports")
        for i in range(19):  # 10 + 9: each alone is far below 20, together one short of it
            (one if i % 2 else two).request(200, dt=0.01, identity=reports)
        await asyncio.sleep(0.5)  # the counts are summed every 0.2 s
        assert one.detector.findings == two.detector.findings == 0
        one.request(200, dt=0.01, identity=reports)  # the 20th over both: fires
        await asyncio.sleep(0.1)
        two.request(200, dt=0.01, identity=reports)  # and the other process does not fire it again
        await asyncio.sleep(0.1)
        findings = await one.findings() + await two.findings()
    finally:
        await state.close()
    assert [f["unmapped"]["bastion"]["detection"] for f in findings] == ["usage_anomaly"]
    assert findings[0]["unmapped"]["bastion"]["count"] >= 20


def test_a_flood_of_fresh_keys_cannot_reset_a_burst_in_progress():
    from bastion.audit.detect import Burst, Distinct

    burst = Burst(threshold=5, window=60.0, limit=100)
    distinct = Distinct(threshold=5, window=60.0, limit=100)
    for i in range(4):
        assert burst.hit("attacker", float(i)) is None
        assert distinct.hit("attacker", f"object-{i}", float(i)) is None
    for i in range(10_000):  # rotating addresses to push the attacker's window out
        burst.hit(f"decoy-{i}", 5.0)
        distinct.hit(f"decoy-{i}", "x", 5.0)
    assert len(burst.keys) == 100
    assert burst.hit("attacker", 6.0) == 0.0
    assert distinct.hit("attacker", "object-4", 6.0) == (5, 0.0)


def test_a_quiet_key_is_forgotten_after_its_window():
    from bastion.audit.detect import Burst

    burst = Burst(threshold=3, window=10.0, limit=100)
    burst.hit("k", 0.0)
    burst.hit("k", 1.0)
    burst.hit("other", 20.0)
    assert "k" not in burst.keys or burst.keys.get("k", 20.0) is None
    assert burst.hit("k", 20.5) is None  # starts afresh
