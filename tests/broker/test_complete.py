"""complete.lua: settle processed entries, fenced by ownership."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventstream.broker import GROUP, Broker, Keys
from tests.support.broker import deliver, ingest, settle_done
from tests.support.conservation import Pending, check


async def test_completes_owned_entries_and_leaves_nothing_behind(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)

    flags = await settle_done(broker, "c1", [(g.entry, g.event_id, False) for g in got])

    assert flags == [True, True, True]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.status == {}
    assert s.retry == {}
    assert s.retry_body == {}
    assert s.dlq == []
    assert s.counters == {"received": 3, "processed": 3}


async def test_only_the_completed_entries_leave(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)

    assert await settle_done(broker, "c1", [(got[1].entry, got[1].event_id, False)]) == [True]

    s = await check(redis, keys)
    assert s.stream_ids() == [items[0][0], items[2][0]]
    assert s.pending == [Pending(got[0].entry, "c1", 1), Pending(got[2].entry, "c1", 1)]
    assert s.counters == {"received": 3, "processed": 1}


async def test_skipped_and_histogram_are_counted(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    done = [(got[0].entry, got[0].event_id, True), (got[1].entry, got[1].event_id, False)]
    done.append((got[2].entry, got[2].event_id, True))

    flags = await settle_done(broker, "c1", done, [("handler:3", 2), ("handler:count", 2)])

    assert flags == [True, True, True]
    s = await check(redis, keys)
    assert s.counters == {"received": 3, "processed": 3, "redelivered_skipped": 2}
    assert s.hist == {"handler:3": 2, "handler:count": 2}


async def test_fencing_rejects_an_entry_pending_for_another_consumer(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    before = await check(redis, keys)

    flags = await settle_done(broker, "c2", [(g.entry, g.event_id, False) for g in got], [("handler:1", 2)])

    assert flags == [False, False]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()  # hist untouched too
    assert after.counters == {"received": 2, "rejected_completions": 2}


async def test_fencing_rejects_an_entry_never_delivered(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1)
    s = await check(redis, keys)
    [(entry, fields)] = s.stream

    assert await settle_done(broker, "c1", [(entry, fields["id"], False)]) == [False]

    after = await check(redis, keys)
    assert after.without_counters() == s.without_counters()
    assert after.counters == {"received": 1, "rejected_completions": 1}


async def test_fencing_after_another_worker_took_the_entry_over(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    await r.xclaim(keys.stream, GROUP, "c2", 0, [got.entry])  # c1's lease expired, c2 took over
    before = await check(redis, keys)

    assert await settle_done(broker, "c1", [(got.entry, got.event_id, False)]) == [False]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.pending == [Pending(got.entry, "c2", 2)]

    assert await settle_done(broker, "c2", [(got.entry, got.event_id, False)]) == [True]
    final = await check(redis, keys)
    assert final.stream == []
    assert final.pending == []
    assert final.status == {}
    assert final.counters == {"received": 1, "processed": 1, "rejected_completions": 1}


async def test_mixed_batch_settles_owned_and_rejects_the_rest(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    items = await ingest(broker, 2)
    [mine] = await deliver(broker, "c1", 1)
    [theirs] = await deliver(broker, "c2", 1)

    flags = await settle_done(
        broker, "c1", [(theirs.entry, theirs.event_id, False), (mine.entry, mine.event_id, True)]
    )

    assert flags == [False, True]
    s = await check(redis, keys)
    assert s.stream_ids() == [items[1][0]]
    assert s.pending == [Pending(theirs.entry, "c2", 1)]
    assert s.counters == {
        "received": 2,
        "processed": 1,
        "redelivered_skipped": 1,
        "rejected_completions": 1,
    }


async def test_completing_twice_counts_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    done = [(got.entry, got.event_id, False)]

    assert await settle_done(broker, "c1", done) == [True]
    assert await settle_done(broker, "c1", done) == [False]
    assert await settle_done(broker, "c1", done + done) == [False, False]

    s = await check(redis, keys)
    assert s.counters == {"received": 1, "processed": 1, "rejected_completions": 3}


async def test_same_entry_twice_in_one_call_completes_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)

    flags = await settle_done(broker, "c1", [(got.entry, got.event_id, False)] * 2)

    assert flags == [True, False]
    s = await check(redis, keys)
    assert s.counters == {"received": 1, "processed": 1, "rejected_completions": 1}


async def test_complete_for_two_consumers(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    first = await settle_done(broker, "c1", [(got[0].entry, got[0].event_id, False)])
    second = await settle_done(broker, "c2", [(got[1].entry, got[1].event_id, False)])

    assert [first, second] == [[True], [False]]
    s = await check(redis, keys)
    assert s.counters == {"received": 2, "processed": 1, "rejected_completions": 1}


async def test_a_group_larger_than_one_chunk_with_foreign_entries_in_its_range(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # 2,500 entries cross the script's 1,000-entry chunks; every fifth one was taken over
    # by c2 and lies inside the range c1 asks about, so only the fence tells them apart.
    await ingest(broker, 2_500)
    got = await deliver(broker, "c1", 2_500)
    taken = [g.entry for g in got[::5]]
    r: Any = redis
    await r.xclaim(keys.stream, GROUP, "c2", 0, taken, justid=True)

    flags = await settle_done(broker, "c1", [(g.entry, g.event_id, False) for g in got])

    assert flags == [i % 5 != 0 for i in range(2_500)]
    s = await check(redis, keys)
    assert [e for e, _ in s.stream] == taken
    assert s.pending == [Pending(e, "c2", 1) for e in taken]
    assert set(s.status) == {g.event_id for g in got[::5]}
    assert s.counters == {"received": 2_500, "processed": 2_000, "rejected_completions": 500}


async def test_own_entries_inside_the_range_that_were_not_named_stay_pending(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # the fence reads c1's whole range got[0]..got[2]; got[1], still in flight, is not completed
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)

    flags = await settle_done(
        broker, "c1", [(got[0].entry, got[0].event_id, False), (got[2].entry, got[2].event_id, False)]
    )

    assert flags == [True, True]
    s = await check(redis, keys)
    assert s.stream_ids() == [items[1][0]]
    assert s.pending == [Pending(got[1].entry, "c1", 1)]
    assert s.counters == {"received": 3, "processed": 2}
