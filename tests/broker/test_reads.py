"""reads.py: the whole-state reads the audit walks, against states built by the real
scripts (and a few written by hand, as a bug would leave them)."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from eventstream.broker.reads import PendingEntry, StateReads, Sums, Target
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, kill, set_idle, settle_retries


def reads(broker: Broker) -> StateReads:
    """The reads of the one partition of the test's deployment."""
    return broker.partitions[0].reads


async def test_a_deployment_with_no_stream_reads_as_empty(redis: Redis, keys: Keys) -> None:
    empty = reads(Broker(redis, keys))  # no ensure_group: neither the stream nor the group exist

    assert await empty.sums() == Sums({}, 0, 0, 0, 0)
    assert await empty.pending(10) == []
    assert await empty.stream_page(None, 10) == []
    assert await empty.status_page(0, 10) == (0, [])


async def test_sums_and_the_pending_list(broker: Broker, redis: Redis, keys: Keys) -> None:
    await kill(broker, 1)  # c1 delivers and dead-letters it
    envelopes = {event_id: env for event_id, env, _ in await ingest(broker, 6)}
    got = await deliver(broker, "c2", 3)
    await set_idle(redis, keys, "c2", [got[0].entry], 5_000)
    [retry] = await deliver(broker, "c2", 1)
    scheduled = [(retry.entry, retry.event_id, 10**13, 1, 1, envelopes[retry.event_id])]
    assert await settle_retries(broker, "c2", scheduled) == [True]

    sums = await reads(broker).sums()
    assert sums == Sums({"received": 7, "failed": 2, "dead_lettered": 1, "retried": 1}, 5, 1, 1, 3)
    pending = await reads(broker).pending(2)  # two pages and a last short one
    assert [(p.entry, p.consumer) for p in pending] == [(g.entry, "c2") for g in got]
    assert pending[0].idle_ms >= 5_000
    assert all(isinstance(p, PendingEntry) for p in pending)


async def test_pages_cover_every_entry_once(broker: Broker) -> None:
    items = await ingest(broker, 7)
    seen: list[tuple[str, str]] = []
    after: str | None = None
    while page := await reads(broker).stream_page(after, 3):
        seen += page
        after = page[-1][0]
    assert [i for _, i in seen] == [item[0] for item in items]
    assert await reads(broker).statuses([i for _, i in seen]) == [f"q:{e}" for e, _ in seen]

    statuses: dict[str, str] = {}
    cursor = 0
    while True:
        cursor, part = await reads(broker).status_page(cursor, 2)
        statuses.update(part)
        if cursor == 0:
            break
    assert statuses == {i: f"q:{e}" for e, i in seen}


async def test_the_retry_set_and_the_dlq_read_with_their_records(broker: Broker) -> None:
    dead = await kill(broker, 2)
    items = await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    due = now_ms() - 1_000
    retries = [(g.entry, g.event_id, due, 1, due, env) for g, (_, env, _) in zip(got, items, strict=True)]
    assert await settle_retries(broker, "c1", retries) == [True, True]
    ids = [i for i, _, _ in items]

    assert sorted(await reads(broker).retry_page(0, 10)) == sorted(ids)
    assert await reads(broker).retry_page(2, 10) == []
    records = await reads(broker).retry_records(ids)
    assert [(s or "").startswith("r:1:") and body for s, body in records] == [True, True]
    assert await reads(broker).recheck_retries([*ids, "nope"]) == [
        *[(True, s, True) for s, _ in records],
        (False, None, False),
    ]
    assert await reads(broker).recheck_scheduled([ids[0], "nope"]) == [True, False]
    assert await reads(broker).retries_due(now_ms(), 1) == (2, (await reads(broker).retry_page(0, 1)))
    assert await reads(broker).retries_due(due - 1, 5) == (0, [])

    page = await reads(broker).dlq_page(None, 10)
    assert [i for _, i in page] == [i for i, _, _ in dead]
    assert await reads(broker).recheck_entries("dlq", page) == [(True, f"d:{e}") for e, _ in page]


async def test_rechecks_of_stream_entries(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 2)
    [held] = await deliver(broker, "c1", 1)
    [(queued_entry, queued_id)] = (await reads(broker).stream_page(held.entry, 10))[:1]

    now = await reads(broker).recheck_in_flight([held.entry, queued_entry, "1-1"])
    assert [present for present, _ in now] == [True, True, False]
    assert now[0][1] is not None  # held by c1, just delivered
    assert now[0][1] < 5_000
    assert now[1][1] is None  # nobody holds it
    assert await reads(broker).recheck_entries("stream", [(queued_entry, queued_id), ("1-1", "x")]) == [
        (True, f"q:{queued_entry}"),
        (False, None),
    ]
    assert await reads(broker).heartbeats() == {}
    await broker.heartbeat("c1", 1234)
    assert await reads(broker).heartbeats() == {"c1": 1234}


async def test_status_targets_say_whether_each_status_points_at_its_event(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [(dead, _, _)] = await kill(broker, 1)
    [(dlq_entry, _)] = await reads(broker).dlq_page(None, 10)
    [(queued, _, _), (other, _, _)] = await ingest(broker, 2)
    [(entry, _), (other_entry, _)] = await reads(broker).stream_page(None, 10)
    r: Redis = redis
    await r.hset(keys.retry_body, "body-only", "{}")  # a retry body without its score

    items = [
        (queued, f"q:{entry}"),  # right
        (queued, f"q:{other_entry}"),  # an entry of another event
        (dead, f"d:{dlq_entry}"),  # right
        ("gone", "q:1-1"),  # no such entry
        ("body-only", "r:1:1"),  # no score in the retry set
        ("x", "q:not-an-id"),
        ("y", "z:1-1"),
        ("z", "r"),  # no colon: nothing to read, and the replies stay aligned
        (other, f"q:{other_entry}"),  # right, after the odd ones
    ]
    targets = await reads(broker).recheck_targets(items)

    assert [t.holds for t in targets] == [True, False, True, False, False, False, False, False, True]
    assert targets[0] == Target(f"q:{entry}", True)
    assert targets[3] == Target(None, False)  # no status field for "gone"
    assert await reads(broker).recheck_targets([]) == []
