"""The producers' rules without I/O (eventstream.client.rules): backoff, Retry-After, splitting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from eventstream.client import rules


def test_backoff_is_full_jitter_within_the_cap() -> None:
    options = rules.Options(retry_base_s=0.1, retry_max_delay_s=1.0)
    for attempt, cap in [(1, 0.1), (2, 0.2), (4, 0.8), (5, 1.0), (500, 1.0)]:
        delays = [options.backoff_s(attempt) for _ in range(200)]
        assert min(delays) >= 0
        assert max(delays) <= cap
        assert max(delays) > cap / 2  # spread over the range, not a fixed delay


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def of(value: str) -> float | None:
        return rules.retry_after_s(httpx.Headers({"Retry-After": value}))

    assert of("7") == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = of(later)
    assert seconds is not None
    assert 25 <= seconds <= 30
    assert of("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0
    assert of("soon") is None
    assert of("9" * 40) is None
    assert of("-3") is None
    assert rules.retry_after_s(httpx.Headers()) is None


def test_split_keeps_every_request_within_both_limits() -> None:
    options = rules.Options(max_batch=3, max_body_bytes=1100)
    events = [{"type": "T", "payload": {"s": "x" * n}} for n in (100, 100, 100, 100, 500, 500, 2000, 10)]
    chunks, too_large = rules.split(events, options)
    assert [c.indexes for c in chunks] == [[0, 1, 2], [3, 4], [5, 7]]
    assert all(len(c.call().content or b"") == c.size <= 1100 for c in chunks)
    assert [(r.index, r.status) for r in too_large] == [(6, 413)]
    assert all(c.generated == [True] * len(c.indexes) for c in chunks)


def test_options_that_cannot_work_are_refused() -> None:
    for bad in ({"max_attempts": 0}, {"max_batch": 0}, {"retry_budget_s": -1}, {"max_body_bytes": 10}):
        with pytest.raises(ValueError, match=r"must be|cannot be"):
            rules.Options(**bad)
    with pytest.raises(ValueError, match="http"):
        rules.check_base_url("ftp://example.com")
