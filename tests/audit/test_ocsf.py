"""The validator itself: it catches what a SIEM's parser would trip on."""

from __future__ import annotations

import copy

import pytest

from bastion.audit.events import OCSF_VERSION, request_event
from bastion.audit.ocsf import pinned, validate
from tests.audit.helpers import ALICE, context

GOOD = request_event("u", context(identity=ALICE), 200, None, 0.001)


def _without(path: str):
    event = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = event
    for part in parents:
        target = target[part]
    del target[last]
    return event


@pytest.mark.parametrize(("path", "problem"), [
    ("metadata", "metadata: required by base_event"),
    ("time", "time: required by base_event"),
    ("actor", "actor: required by api_activity"),
    ("src_endpoint", "src_endpoint: required by api_activity"),
    ("api.operation", "api.operation: required by api"),
    ("metadata.product.vendor_name", "metadata.product.vendor_name: required by product"),
    ("metadata.version", "metadata.version: required by metadata"),
    ("unmapped", "unmapped.bastion: Bastion's own fields are missing"),
])
def test_missing_required_attribute_is_reported(path, problem):
    assert problem in validate(_without(path))


def test_wrong_ids_are_reported():
    event = copy.deepcopy(GOOD)
    event["type_uid"] = 600399
    event["severity_id"] = 9
    problems = validate(event)
    assert any(p.startswith("type_uid") for p in problems)
    assert any(p.startswith("severity_id") for p in problems)


def test_pinned_version_is_the_emitted_one():
    assert pinned()["version"] == OCSF_VERSION == GOOD["metadata"]["version"] == "1.3.0"
    assert set(pinned()["classes"]) == {"6003", "3002", "2004"}
