"""Background sending's rules without I/O: when a batch is due, what an outcome does to
the buffer, what giving up reports, the options refused."""

from __future__ import annotations

import pytest

from eventstream import Accepted, Forbidden, RateLimited, Rejected, Unavailable
from eventstream.client.backlog import Backlog, Settings, Stats


def filled(n: int, **options: object) -> Backlog:
    backlog = Backlog(Settings(**options), max_batch=1000)  # type: ignore[arg-type]
    for i in range(n):
        backlog.add({"id": f"k{i}", "type": "OK", "payload": {}}, now=100.0 + i)
    return backlog


def test_a_batch_is_due_when_full_when_old_or_when_asked() -> None:
    assert filled(0).wait_s(0.0) is None  # nothing: wait until told
    assert filled(1, flush_interval_s=0.5).wait_s(100.2) == pytest.approx(0.3)
    assert filled(1, flush_interval_s=0.5).wait_s(100.5) == 0
    assert filled(3, batch_size=3).wait_s(100.0) == 0
    asked = filled(1)
    asked.flush_to = 1
    assert asked.wait_s(100.0) == 0
    assert [i.key for i in filled(5, batch_size=2).batch()] == ["k0", "k1"]


def test_a_failure_that_may_pass_keeps_the_batch_and_pauses() -> None:
    backlog = filled(3, batch_size=2, retry_pause_s=5)
    for error in (Unavailable("down"), RateLimited("slow down", 1, {})):
        assert backlog.settle(backlog.batch(), error, now=200.0) == []
        assert backlog.stats() == Stats(3, 0, 0)
        assert backlog.wait_s(201.0) == pytest.approx(4.0)


def test_rejected_items_and_final_failures_are_undelivered() -> None:
    backlog = filled(4, batch_size=2)
    outcome: list[Accepted | Rejected] = [Accepted("e0"), Rejected(1, 422, "bad type")]
    [rejected] = backlog.settle(backlog.batch(), outcome, now=0.0)
    assert (rejected.key, rejected.error) == ("k1", Rejected(1, 422, "bad type"))
    forbidden = Forbidden("no")
    failed = backlog.settle(backlog.batch(), forbidden, now=0.0)
    assert [(f.key, f.error) for f in failed] == [("k2", forbidden), ("k3", forbidden)]
    assert backlog.stats() == Stats(0, 1, 3)
    assert backlog.flushed(4)


def test_giving_up_reports_every_item_left_and_a_late_outcome_changes_nothing() -> None:
    backlog = filled(3, batch_size=2)
    batch = backlog.batch()
    failed = backlog.abandon()
    assert [f.key for f in failed] == ["k0", "k1", "k2"]
    assert isinstance(failed[0].error, Unavailable)
    assert backlog.settle(batch, [Accepted("e0"), Accepted("e1")], now=0.0) == []
    assert backlog.stats() == Stats(0, 0, 3)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"max_queue": 0}, "at least 1"),
        ({"batch_size": 0}, "at least 1"),
        ({"on_full": "drop"}, "on_full"),
        ({"flush_interval_s": -1}, "negative"),
    ],
)
def test_options_that_make_no_sense_are_refused(options: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Settings(**options)  # type: ignore[arg-type]
