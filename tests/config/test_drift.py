"""`gateway.drift`: the model (the watch itself: tests/posture/test_drift.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config.drift import DriftConfig


def test_interval_defaults_to_five_minutes_and_reads_durations():
    assert DriftConfig.model_validate({"approved": "approved/bastion.yaml"}).interval == 300.0
    config = DriftConfig.model_validate({"approved": "a.yaml", "interval": "50ms"})
    assert config.interval == 0.05 and config.approved == Path("a.yaml")


@pytest.mark.parametrize("fields", [{}, {"approved": "a.yaml", "interval": 0}, {"approved": "a.yaml", "x": 1}])
def test_invalid_settings_are_refused(fields):
    with pytest.raises(ValidationError):
        DriftConfig.model_validate(fields)
