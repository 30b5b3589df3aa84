"""The limit algorithms as pure functions of (hit, stored state, now): used by the memory backend and
mirrored line for line by the Redis Lua script (`bastion/state/scripts.py`), so both backends give the same answers.

Stored state: token bucket `(tokens, ts)`, sliding window `(window_index, current, previous)`, fixed window
`(anchor, count)`. `None` means "nothing stored" (a full bucket, empty windows).
"""

from __future__ import annotations

import math

from bastion.state import Hit, Outcome

State = tuple[float, ...]

# Keys live at least this long so a state is not lost while an (injected or skewed) clock stands still.
MIN_TTL = 60.0


def _take(hit: Hit, available: float) -> int:
    """Units to take when admitted: the cost, or up to `take` (a lease) if that many are available."""
    if hit.take > hit.cost:
        return max(hit.cost, min(hit.take, math.floor(available)))
    return hit.cost


def token_bucket(hit: Hit, state: State | None, now: float) -> tuple[Outcome, State, float]:
    """Sustained rate `limit/period` with bursts up to `limit`."""
    rate = hit.limit / hit.period
    if state is None:
        tokens, ts = hit.limit, now
    else:
        tokens, ts = state
    elapsed = now - ts
    if elapsed < 0:  # another node's clock is ahead: no refill, no negative refill
        elapsed = 0.0
    tokens = min(hit.limit, tokens + elapsed * rate)
    if ts < now:
        ts = now
    ttl = max(MIN_TTL, hit.period + 1)
    if tokens >= hit.cost:
        taken = _take(hit, tokens)
        left = tokens - taken
        return Outcome(True, math.floor(left), (hit.limit - left) / rate, 0.0, taken), (left, ts), ttl
    retry = (hit.cost - tokens) / rate
    return Outcome(False, math.floor(tokens), retry, retry, 0), (tokens, ts), ttl


def sliding_window(hit: Hit, state: State | None, now: float) -> tuple[Outcome, State, float]:
    """Sliding-window counter: estimate = previous * (1 - elapsed/period) + current."""
    period = hit.period
    index = math.floor(now / period)
    elapsed = now - index * period
    current = previous = 0.0
    if state is not None:
        stored, cur, prev = state
        if stored == index:
            current, previous = cur, prev
        elif stored == index - 1:
            previous = cur
    estimate = previous * (1 - elapsed / period) + current
    ttl = max(MIN_TTL, 2 * period + 1)
    available = hit.limit - estimate
    if available >= hit.cost:
        taken = _take(hit, available)
        current += taken
        left = available - taken
        return (Outcome(True, math.floor(left), period - elapsed, 0.0, taken),
                (float(index), current, previous), ttl)
    # Refused: when will `estimate + cost <= limit` hold again?
    room = hit.limit - current - hit.cost
    if room >= 0 and previous > 0:  # within this window, as the previous window's weight decays
        retry = period * (1 - room / previous) - elapsed
    else:  # only after this window ends, when `current` becomes the decaying previous window
        retry = period - elapsed
        if current > 0:
            retry += max(0.0, period * (1 - (hit.limit - hit.cost) / current))
    retry = max(retry, 0.001)
    refused = Outcome(False, max(0, math.floor(available)), retry, retry, 0)
    return refused, (float(index), current, previous), ttl


def fixed_window(hit: Hit, state: State | None, now: float) -> tuple[Outcome, State, float]:
    """A calendar window [anchor, anchor + period): quotas per day or month."""
    count = 0.0
    if state is not None and state[0] == hit.anchor:
        count = state[1]
    reset = hit.anchor + hit.period - now
    if reset < 0:
        reset = 0.0
    ttl = max(MIN_TTL, reset + 1)
    available = hit.limit - count
    if available >= hit.cost:
        taken = _take(hit, available)
        admitted = Outcome(True, math.floor(available - taken), reset, 0.0, taken)
        return admitted, (hit.anchor, count + taken), ttl
    return Outcome(False, max(0, math.floor(available)), reset, reset, 0), (hit.anchor, count), ttl


ALGORITHMS = {"token_bucket": token_bucket, "sliding_window": sliding_window, "fixed_window": fixed_window}
