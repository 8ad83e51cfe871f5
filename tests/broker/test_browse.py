"""The Events page's live listings: scheduled retries by due time (Views.retries) and
stream entries by place (broker.browse), keyset-paged."""

from __future__ import annotations

from eventstream.broker import Broker, browse
from tests.support.broker import deliver, ingest, settle_retries


async def test_scheduled_retries_page_by_due_time_then_id_even_on_ties(broker: Broker) -> None:
    """The Events page lists retrying events through Views.retries, as the Retries page does."""
    items = await ingest(broker, 7)
    got = await deliver(broker, "c1", 7)
    by_id = {i[0]: i for i in items}
    due = [5_000, 1_000, 3_000, 3_000, 3_000, 3_000, 9_000]  # four share one due time
    await settle_retries(
        broker,
        "c1",
        [
            (g.entry, g.event_id, d, 1, 100 + n, by_id[g.event_id][1])
            for n, (g, d) in enumerate(zip(got, due, strict=True))
        ],
    )
    expected = sorted((d, g.event_id) for g, d in zip(got, due, strict=True))
    seen: list[tuple[int, str]] = []
    after = None
    while True:
        page = await broker.views.retries(after, 2)
        seen += [(r.due_ms, r.event_id) for r in page]
        if len(page) < 2:
            break
        after = page[-1].cursor
    assert seen == expected
    [first] = await broker.views.retries(None, 1)
    assert (first.attempts, first.first_failure_ms) == (1, 101)
    assert first.envelope == by_id[first.event_id][1].decode()
    assert [r.due_ms for r in await broker.views.retries(None, 10, until_ms=3_000)] == [1_000]
    assert [r.due_ms for r in await broker.views.retries(None, 10, since_ms=5_000)] == [5_000, 9_000]
    assert await broker.views.retries((9_000, 0, expected[-1][1]), 10) == []


async def test_stream_entries_page_by_place_and_tell_in_flight_ones(broker: Broker) -> None:
    items = await ingest(broker, 5)
    await deliver(broker, "c1", 2)
    seen: list[browse.InStream] = []
    after = None
    while True:
        page = await browse.in_stream(broker.partitions, after, None, None, 2)
        seen += page
        if len(page) < 2:
            break
        after = page[-1].place
    assert [s.entry.event_id for s in seen] == [i[0] for i in items]
    assert [s.in_flight for s in seen] == [True, True, False, False, False]
    assert await browse.in_stream(broker.partitions, None, 2**42, None, 10) == []
    assert await browse.in_stream(broker.partitions, None, None, 1, 10) == []
    assert await browse.in_stream(broker.partitions, None, -5, 0, 10) == []
