"""The step-up challenge travels in a revocation record's source and renders as RFC 9470 §3 says."""

from __future__ import annotations

import pytest

from bastion.stages.identity.challenge import StepUp


@pytest.mark.parametrize(("step_up", "header"), [
    (StepUp(("urn:mfa",)), 'acr_values="urn:mfa"'),
    (StepUp(("urn:mfa", "urn:phr"), 0), 'acr_values="urn:mfa urn:phr", max_age="0"'),
    (StepUp((), 300), 'max_age="300"'),
    (StepUp(('bad" value',)), None),  # a value that would break the header is dropped
])
def test_round_trip_through_the_record_source(step_up: StepUp, header: str | None) -> None:
    source = step_up.source("ssf:corp")
    assert source.startswith("ssf:corp;step-up")
    back = StepUp.from_source(source)
    assert back is not None
    rendered = back.challenge("Bearer", "bastion")
    assert rendered.startswith('Bearer realm="bastion", error="insufficient_user_authentication"')
    if header is None:
        assert "acr_values" not in rendered
    else:
        assert rendered.endswith(header)


def test_a_plain_revocation_asks_for_no_step_up() -> None:
    assert StepUp.from_source("ssf:corp") is None and StepUp.from_source("admin") is None
