"""MemoryState's limit table: bounded, and a client rotating keys cannot reset a noisy key's count."""

from __future__ import annotations

from bastion.state import Hit
from bastion.state.memory import MemoryState


def test_a_noisy_key_stays_limited_while_fresh_keys_churn_the_table():
    state = MemoryState(max_keys=1000)
    noisy = Hit("noisy", "sliding_window", limit=3, period=60)
    assert all(state.hit_now([noisy], 0.0)[0].allowed for _ in range(3))
    for i in range(20_000):  # one request each from 20,000 rotating addresses
        state.hit_now([Hit(f"ip-{i}", "sliding_window", limit=3, period=60)], 1.0)
    assert len(state._limits) == 1000
    assert not state.hit_now([noisy], 2.0)[0].allowed


def test_expired_windows_leave_without_a_full_sweep():
    state = MemoryState(max_keys=100_000)
    for i in range(1000):
        state.hit_now([Hit(f"k-{i}", "fixed_window", limit=5, period=1)], 0.0)
    for i in range(600):
        state.hit_now([Hit(f"later-{i}", "fixed_window", limit=5, period=1)], 100.0)  # MIN_TTL is 60 s
    assert len(state._limits) == 600
