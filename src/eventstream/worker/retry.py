"""Retry policy: pure functions, no I/O."""

from __future__ import annotations

import random


def backoff_s(attempts_made: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next try: exponential with full jitter.

    The ceiling doubles with each failed attempt (``base * 2**(n-1)``), is capped at
    ``cap_s``, and the wait is drawn uniformly from [0, ceiling] so that a burst of
    failures does not come back as a burst of retries.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made counts failed tries and starts at 1")
    ceiling = min(cap_s, base_s * (2 ** min(attempts_made - 1, 60)))
    return (rng or random).uniform(0, ceiling)
