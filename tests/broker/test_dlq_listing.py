"""Broker.list_dead (newest first, cursor, type filter) and Broker.scan_dead (oldest first)."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, DeadEntry, Keys
from tests.support.broker import kill
from tests.support.conservation import check


async def dead_ids(redis: Redis, keys: Keys) -> list[str]:
    """DLQ entry ids, oldest first, read straight from Redis."""
    return [e for e, _ in (await check(redis, keys)).dlq]


async def test_empty_dlq(broker: Broker) -> None:
    assert await broker.list_dead(None, 10) == ([], None)
    assert await broker.list_dead(None, 10, "A") == ([], None)
    assert await broker.scan_dead("-", 10) == []


async def test_pages_newest_first_without_gaps_or_repeats(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await kill(broker, 7)
    ids = await dead_ids(redis, keys)

    pages: list[list[DeadEntry]] = []
    cursor: str | None = None
    for _ in range(10):
        page, cursor = await broker.list_dead(cursor, 3)
        pages.append(page)
        if cursor is None:
            break

    assert [[d.dlq_entry for d in p] for p in pages] == [ids[6:3:-1], ids[3:0:-1], ids[0:1]]
    assert [d.event_id for p in pages for d in p] == [i[0] for i in reversed(items)]
    first = pages[0][0]
    assert (first.type, first.attempts, first.reason, first.traceback) == ("A", 3, "boom", "tb")
    assert (first.envelope, first.first_failure_ms, first.last_failure_ms) == (items[-1][1].decode(), 10, 20)


async def test_cursor_is_the_last_entry_returned_and_exclusive(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await kill(broker, 4)
    ids = await dead_ids(redis, keys)

    page, cursor = await broker.list_dead(None, 2)
    assert [d.dlq_entry for d in page] == [ids[3], ids[2]]
    assert cursor == ids[2]

    page, cursor = await broker.list_dead(ids[2], 5)
    assert [d.dlq_entry for d in page] == [ids[1], ids[0]]
    assert cursor is None

    assert await broker.list_dead(ids[0], 5) == ([], None)


async def test_type_filter(broker: Broker, redis: Redis, keys: Keys) -> None:
    types = ["A", "B", "A", "B", "B", "A", "C"]
    items = await kill(broker, len(types), types)

    newest_a, cursor = await broker.list_dead(None, 2, "A")
    assert [d.event_id for d in newest_a] == [items[5][0], items[2][0]]
    rest, end = await broker.list_dead(cursor, 2, "A")
    assert [d.event_id for d in rest] == [items[0][0]]
    assert end is None

    all_b, _ = await broker.list_dead(None, 10, "B")
    assert [d.event_id for d in all_b] == [items[4][0], items[3][0], items[1][0]]
    assert {d.type for d in all_b} == {"B"}
    assert await broker.list_dead(None, 10, "Z") == ([], None)


async def test_type_filter_looks_past_many_other_entries(broker: Broker, redis: Redis, keys: Keys) -> None:
    # the matching entries are older than several read chunks of other types
    types = ["A"] * 3 + ["B"] * 230
    items = await kill(broker, len(types), types)

    page, cursor = await broker.list_dead(None, 2, "A")
    assert [d.event_id for d in page] == [items[2][0], items[1][0]]
    page, cursor = await broker.list_dead(cursor, 2, "A")
    assert [d.event_id for d in page] == [items[0][0]]
    assert cursor is None

    newest_b, _ = await broker.list_dead(None, 150, "B")
    assert [d.event_id for d in newest_b] == [i[0] for i in reversed(items[83:])]


async def test_scan_oldest_first_strictly_after(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await kill(broker, 5)
    ids = await dead_ids(redis, keys)

    first = await broker.scan_dead("-", 2)
    assert [d.dlq_entry for d in first] == ids[:2]
    assert [d.event_id for d in first] == [items[0][0], items[1][0]]
    rest = await broker.scan_dead(first[-1].dlq_entry, 10)
    assert [d.dlq_entry for d in rest] == ids[2:]
    assert await broker.scan_dead(ids[-1], 10) == []


async def test_listing_follows_replay_and_delete(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await kill(broker, 4)
    ids = await dead_ids(redis, keys)
    await broker.replay_dead([ids[1]])
    await broker.delete_dead([(ids[2], items[2][0])])

    page, cursor = await broker.list_dead(None, 10)
    assert [d.event_id for d in page] == [items[3][0], items[0][0]]
    assert cursor is None
    assert [d.event_id for d in await broker.scan_dead("-", 10)] == [items[0][0], items[3][0]]
    await check(redis, keys)
