"""worker.retry.backoff_s: exponential ceiling, cap, full jitter."""

from __future__ import annotations

import random

import pytest

from eventstream.worker.retry import backoff_s


@pytest.mark.parametrize(
    ("made", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (50, 10.0)]
)
def test_draws_stay_within_the_capped_exponential_ceiling(made: int, ceiling: float) -> None:
    rng = random.Random(made)
    draws = [backoff_s(made, 0.5, 10.0, rng) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # full jitter: the whole range is used, from near zero to near the ceiling
    assert min(draws) < ceiling * 0.05
    assert max(draws) > ceiling * 0.95


def test_ceiling_doubles_per_failed_attempt() -> None:
    # uniform(0, c) with the same seed scales linearly with c
    ratios = []
    for made in range(1, 6):
        a = backoff_s(made, 1.0, 1e9, random.Random(7))
        b = backoff_s(made + 1, 1.0, 1e9, random.Random(7))
        ratios.append(b / a)
    assert ratios == pytest.approx([2.0] * 5)


def test_same_seed_same_delay_and_matches_uniform() -> None:
    assert backoff_s(3, 0.25, 60.0, random.Random(42)) == backoff_s(3, 0.25, 60.0, random.Random(42))
    assert backoff_s(3, 0.25, 60.0, random.Random(42)) == random.Random(42).uniform(0, 1.0)
    assert backoff_s(3, 0.25, 60.0, random.Random(1)) != backoff_s(3, 0.25, 60.0, random.Random(2))


def test_cap_applies_and_huge_attempt_counts_do_not_overflow() -> None:
    rng = random.Random(3)
    assert all(backoff_s(10**6, 1.0, 2.0, rng) <= 2.0 for _ in range(100))
    assert 0.0 <= backoff_s(10**9, 1e300, 5.0, rng) <= 5.0


def test_zero_base_or_zero_cap_means_no_wait() -> None:
    assert backoff_s(4, 0.0, 10.0, random.Random(0)) == 0.0
    assert backoff_s(4, 3.0, 0.0, random.Random(0)) == 0.0


def test_without_rng_uses_module_random() -> None:
    random.seed(99)
    first = backoff_s(2, 1.0, 10.0)
    random.seed(99)
    assert backoff_s(2, 1.0, 10.0) == first
    assert 0.0 <= first <= 2.0


@pytest.mark.parametrize("made", [0, -1, -100])
def test_attempts_made_below_one_is_an_error(made: int) -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_s(made, 1.0, 10.0)
