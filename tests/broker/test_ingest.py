"""ingest.lua: enqueue a batch, deduplicate by idempotency key, count."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from eventstream.broker.keys import idem_digest
from eventstream.broker.scripts import Dedupe, Outcome
from tests.support.broker import Item, expiry_of, make_items, raw_record, server_ms, settle_done, wait_gone
from tests.support.conservation import check, dedupe_records
from tests.support.waiting import wait_until

WINDOW = 60_000


async def test_enqueues_each_event_with_status_and_counter(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = make_items(3)
    results = await broker.enqueue(items, WINDOW)

    assert results == [(event_id, False) for event_id, _, _ in items]
    s = await check(redis, keys)
    assert [f for _, f in s.stream] == [{"id": event_id, "e": env.decode()} for event_id, env, _ in items]
    assert s.status == {f["id"]: f"q:{entry}" for entry, f in s.stream}
    assert s.pending == []
    assert s.retry == {}
    assert s.retry_body == {}
    assert s.dlq == []
    assert s.counters == {"received": 3}
    assert s.idem == {}


async def test_duplicate_within_one_batch(broker: Broker, redis: Redis, keys: Keys) -> None:
    [first] = make_items(1, key="k-1")
    [second] = make_items(1, key="k-1")
    [other] = make_items(1, key="k-2")

    results = await broker.enqueue([first, second, other], WINDOW)

    assert results == [(first[0], False), (first[0], True), (other[0], False)]
    s = await check(redis, keys)
    assert s.stream_ids() == [first[0], other[0]]
    assert second[0] not in s.status
    assert s.counters == {"received": 2, "duplicates": 1}
    assert s.idem == {keys.dedupe("k-1"): first[0], keys.dedupe("k-2"): other[0]}


async def test_duplicate_across_calls(broker: Broker, redis: Redis, keys: Keys) -> None:
    [first] = make_items(1, key="order-7")
    [again] = make_items(1, key="order-7")
    await broker.enqueue([first], WINDOW)
    before = await check(redis, keys)

    results = await broker.enqueue([again], WINDOW)

    assert results == [(first[0], True)]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "duplicates": 1}


async def test_duplicate_of_an_event_already_processed_is_still_a_duplicate(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [first] = make_items(1, key="k")
    await broker.enqueue([first], WINDOW)
    [got] = await broker.read_new("c1", 1, 10)
    assert await settle_done(broker, "c1", [(got.entry, got.event_id, False)]) == [True]

    results = await broker.enqueue(make_items(1, key="k"), WINDOW)

    assert results == [(first[0], True)]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.status == {}
    assert s.counters == {"received": 1, "processed": 1, "duplicates": 1}


async def test_idempotency_keys_map_to_the_right_events_in_a_mixed_batch(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # KEYS holds only events that carry a key: the index in ARGV must follow them.
    a = make_items(1)[0]
    b = make_items(1, key="kb")[0]
    c = make_items(1)[0]
    d = make_items(1, key="kd")[0]
    e = make_items(1, key="kb")[0]
    f = make_items(1)[0]

    results = await broker.enqueue([a, b, c, d, e, f], WINDOW)

    assert results == [
        (a[0], False),
        (b[0], False),
        (c[0], False),
        (d[0], False),
        (b[0], True),
        (f[0], False),
    ]
    s = await check(redis, keys)
    assert s.stream_ids() == [a[0], b[0], c[0], d[0], f[0]]
    assert s.idem == {keys.dedupe("kb"): b[0], keys.dedupe("kd"): d[0]}
    assert s.counters == {"received": 5, "duplicates": 1}


async def test_idempotency_key_is_stored_hashed_until_the_window_ends(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    raw = "customer:42/order:9"
    [item] = make_items(1, key=raw)
    before = await server_ms(redis)
    await broker.enqueue([item], WINDOW)
    after = await server_ms(redis)

    s = await check(redis, keys)
    record = keys.dedupe(raw)
    assert list(s.idem) == [record]
    assert raw not in record.hash
    assert raw.encode() not in record.field
    assert [k async for k in r.scan_iter(match=f"*{raw}*")] == []
    value = await raw_record(redis, record)
    assert value is not None
    assert before + WINDOW <= expiry_of(value) <= after + WINDOW
    # the hash lives no longer than its newest record
    assert 0 < await r.pttl(record.hash) <= WINDOW


async def test_duplicate_does_not_extend_the_window(broker: Broker, redis: Redis, keys: Keys) -> None:
    await broker.enqueue(make_items(1, key="k"), WINDOW)
    written = await raw_record(redis, keys.dedupe("k"))

    results = await broker.enqueue(make_items(1, key="k"), 10 * WINDOW)

    assert results[0][1] is Outcome.DUPLICATE
    assert await raw_record(redis, keys.dedupe("k")) == written


async def test_key_expires_after_the_window_and_is_then_accepted_again(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [first] = make_items(1, key="short")
    await broker.enqueue([first], 50)
    value = await raw_record(redis, keys.dedupe("short"))
    assert value is not None
    assert expiry_of(value) <= await server_ms(redis) + 50

    expires = expiry_of(value)

    async def expired() -> bool:
        return await server_ms(redis) >= expires

    await wait_until(expired, what="the record to expire")
    [second] = make_items(1, key="short")
    results = await broker.enqueue([second], 50)

    assert results == [(second[0], False)]
    s = await check(redis, keys)
    assert s.stream_ids() == [first[0], second[0]]
    assert s.counters == {"received": 2}
    assert s.idem == {keys.dedupe("short"): second[0]}


def keys_sharing_a_hash(n: int) -> list[str]:
    """n client keys whose records share one dedupe hash (their digests' first 3 hex digits)."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        key = f"same-hash-{i}"
        if idem_digest(key, None)[:3] == idem_digest("same-hash-0", None)[:3]:
            found.append(key)
        i += 1
    return found


async def test_writes_delete_the_expired_records_they_sample(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    sharing = keys_sharing_a_hash(40)
    old, new = sharing[:20], sharing[20:]
    # one call: its writes all see the same time, so none of them finds another expired
    await broker.enqueue([make_items(1, key=key, start=i)[0] for i, key in enumerate(old)], 20)
    name = keys.dedupe(old[0]).hash
    assert await r.hlen(name) == 20
    await asyncio.sleep(0.05)  # all 20 have expired
    assert await dedupe_records(r, name) == {}

    for i, key in enumerate(new):
        await broker.enqueue(make_items(1, key=key, start=100 + i), WINDOW)

    # 20 writes sampled 4 fields each: the expired ones they met are gone, the live stay
    assert len(await dedupe_records(r, name)) == 20
    assert await r.hlen(name) < 40
    assert set((await check(redis, keys)).idem) == {keys.dedupe(k) for k in new}


async def test_a_dedupe_hash_left_alone_goes_when_its_records_expire(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await broker.enqueue(make_items(1, key="brief"), 30)
    await wait_gone(redis, keys.dedupe("brief").hash)
    assert (await check(redis, keys)).idem == {}


async def test_a_shorter_window_set_later_cuts_no_record_short(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    long_key, short_key = keys_sharing_a_hash(2)
    [first] = make_items(1, key=long_key)
    await broker.enqueue([first], WINDOW)
    await broker.enqueue(make_items(1, key=short_key, start=1), 20)  # same hash, 20-ms window

    name = keys.dedupe(long_key).hash
    assert WINDOW - 5_000 < await r.pttl(name) <= WINDOW
    await asyncio.sleep(0.05)  # the short record has expired, the long one has not
    assert await broker.enqueue(make_items(1, key=long_key), 20) == [(first[0], Outcome.DUPLICATE)]


async def test_an_earlier_versions_record_still_dedupes(broker: Broker, redis: Redis, keys: Keys) -> None:
    """Records written before the dedupe hashes ({p}:idem:<hash> strings) are honoured
    until they expire, and no new record is written for their keys meanwhile."""
    r: Any = redis
    [first] = make_items(1, key="legacy")
    assert first[2] is not None
    await r.set(keys.idem("legacy"), first[0] + first[2].fingerprint.decode(), px=WINDOW)
    [same] = make_items(1, key="legacy")
    [other] = make_items(1, key="legacy", start=1)
    [bare] = make_items(1)
    await r.set(keys.idem("id-only"), bare[0], px=WINDOW)
    [any_content] = make_items(1, key="id-only", start=3)

    results = await broker.enqueue([same, other, any_content], WINDOW)

    assert results == [
        (first[0], Outcome.DUPLICATE),
        (first[0], Outcome.CONFLICT),
        (bare[0], Outcome.DUPLICATE),
    ]
    assert await raw_record(redis, keys.dedupe("legacy")) is None
    assert await raw_record(redis, keys.dedupe("id-only")) is None
    s = await check(redis, keys)
    assert s.stream_ids() == []
    assert s.counters == {"duplicates": 2}


async def test_stream_entries_are_ordered_across_calls(broker: Broker, redis: Redis, keys: Keys) -> None:
    first = make_items(2)
    second = make_items(2, start=2)
    await broker.enqueue(first, WINDOW)
    await broker.enqueue(second, WINDOW)

    s = await check(redis, keys)
    assert s.stream_ids() == [i[0] for i in first + second]
    assert s.counters == {"received": 4}


async def test_events_queued_by_ingest_are_read_with_zero_attempts(broker: Broker, redis: Redis) -> None:
    items = make_items(2)
    await broker.enqueue(items, WINDOW)

    got = await broker.read_new("c1", 10, 10)

    assert [(g.event_id, g.attempts, g.first_failure_ms, g.envelope) for g in got] == [
        (event_id, 0, None, env.decode()) for event_id, env, _ in items
    ]


async def test_a_call_larger_than_one_status_chunk(broker: Broker, redis: Redis, keys: Keys) -> None:
    # 2,100 events cross the script's 1,000-event HSET chunks; keys on some, one repeated
    items: list[Item] = []
    for i in range(2_100):
        event_id, env, _ = make_items(1, start=i)[0]
        items.append((event_id, env, f"k{i % 500}" if i % 3 == 0 else None))  # no fingerprint

    results = await broker.enqueue(items, WINDOW)

    first_of: dict[str, str] = {}
    expected = []
    for event_id, _, key in items:
        if key is not None and key in first_of:
            expected.append((first_of[key], True))
            continue
        if key is not None:
            first_of[key] = event_id
        expected.append((event_id, False))
    assert results == expected
    s = await check(redis, keys)
    assert s.stream_ids() == [event_id for event_id, dup in expected if not dup]
    assert s.counters == {"received": len(s.stream), "duplicates": 2_100 - len(s.stream)}


async def test_a_key_reused_for_other_content_is_a_conflict_and_changes_nothing(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [first] = make_items(1, key="k")  # payload {"n": 0}
    [same] = make_items(1, key="k")  # the same content
    [other] = make_items(1, key="k", start=1)  # payload {"n": 1}
    await broker.enqueue([first], WINDOW)
    before = await check(redis, keys)
    record = await raw_record(redis, keys.dedupe("k"))
    assert first[2] is not None
    assert record is not None
    # expiry (6 bytes), the event's UUID (16), its content's fingerprint (6): 28 bytes
    assert len(record) == 28
    assert record[6:22] == uuid.UUID(first[0]).bytes
    assert record[22:] == base64.urlsafe_b64decode(first[2].fingerprint)

    results = await broker.enqueue([other, same, other], WINDOW)

    assert results == [
        (first[0], Outcome.CONFLICT),
        (first[0], Outcome.DUPLICATE),
        (first[0], Outcome.CONFLICT),
    ]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "duplicates": 1}
    assert await raw_record(redis, keys.dedupe("k")) == record


async def test_a_record_without_a_fingerprint_matches_any_content(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    """Records of replays, and those written before fingerprints, hold just the id."""
    [first] = make_items(1)
    await broker.enqueue([(first[0], first[1], "old")], WINDOW)
    [later] = make_items(1, key="old", start=5)

    assert await broker.enqueue([later], WINDOW) == [(first[0], Outcome.DUPLICATE)]


async def test_namespaces_keep_one_client_key_apart(broker: Broker, redis: Redis, keys: Keys) -> None:
    a, b, anon = make_items(3)
    items = [
        (a[0], a[1], Dedupe("order-1", "key:aaaaaaaaaaaa", b"abcdefgh")),
        (b[0], b[1], Dedupe("order-1", "ns:shop", b"abcdefgh")),
        (anon[0], anon[1], Dedupe("order-1", None, b"abcdefgh")),
    ]

    results = await broker.enqueue(items, WINDOW)

    assert results == [(a[0], Outcome.NEW), (b[0], Outcome.NEW), (anon[0], Outcome.NEW)]
    s = await check(redis, keys)
    assert s.idem == {
        keys.dedupe("order-1", "key:aaaaaaaaaaaa"): a[0],
        keys.dedupe("order-1", "ns:shop"): b[0],
        keys.dedupe("order-1"): anon[0],
    }
    assert len(s.idem) == 3
