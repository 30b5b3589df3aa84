import pytest

from bastion.state import Hit, Outcome


def test_a_hit_is_an_immutable_value() -> None:
    hit = Hit("rl:k", "sliding_window", 100.0, 60.0)
    assert (hit.cost, hit.take, hit.anchor) == (1, 0, 0.0)
    assert hit == Hit("rl:k", "sliding_window", 100, 60, 1, 0, 0.0)
    assert hash(hit) == hash(Hit("rl:k", "sliding_window", 100, 60))
    assert hit != Hit("rl:k", "token_bucket", 100, 60)
    for field in ("key", "cost", "take"):
        with pytest.raises(AttributeError):
            setattr(hit, field, 5)
    assert hit.cost == 1 and hit.take == 0
    assert repr(hit) == ("Hit(key='rl:k', kind='sliding_window', limit=100.0, period=60.0, cost=1, take=0, "
                         "anchor=0.0)")


def test_a_hit_leases_and_refunds_as_copies() -> None:
    hit = Hit("rl:k", "fixed_window", 10, 86400, cost=2, anchor=1700000000.0)
    assert hit.leasing(8) == Hit("rl:k", "fixed_window", 10, 86400, 2, 8, 1700000000.0)
    assert hit.refund(5) == Hit("rl:k", "fixed_window", 10, 86400, -5, -5, 1700000000.0)
    assert hit.take == 0  # the original is unchanged


def test_an_outcome_is_an_immutable_value() -> None:
    outcome = Outcome(True, 7, 0.5, 0.0, 3)
    assert outcome == Outcome(True, 7, 0.5, 0.0, 3) and outcome != Outcome(True, 7, 0.5, 0.0, 0)
    assert hash(outcome) == hash(Outcome(True, 7, 0.5, 0.0, 3))
    assert Outcome(False, 0, 1.0, 1.0).granted == 0
    with pytest.raises(AttributeError):
        outcome.allowed = False  # type: ignore[misc]
    assert outcome.ungranted() == Outcome(True, 7, 0.5, 0.0, 0)
    assert outcome.topped_up(4) == Outcome(True, 11, 0.5, 0.0, 3)
    assert outcome.granted == 3 and outcome.remaining == 7
    assert repr(outcome) == "Outcome(allowed=True, remaining=7, reset=0.5, retry_after=0.0, granted=3)"
