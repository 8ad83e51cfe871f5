"""ingest.lua: enqueue a batch, deduplicate by idempotency key, count."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from eventstream.broker.scripts import Dedupe, Outcome
from tests.support.broker import Item, make_items, settle_done, wait_gone
from tests.support.conservation import check

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
    assert s.idem == {keys.idem("k-1"): first[0], keys.idem("k-2"): other[0]}


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
    assert s.idem == {keys.idem("kb"): b[0], keys.idem("kd"): d[0]}
    assert s.counters == {"received": 5, "duplicates": 1}


async def test_idempotency_key_is_stored_hashed_with_the_window_as_ttl(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    raw = "customer:42/order:9"
    [item] = make_items(1, key=raw)
    await broker.enqueue([item], WINDOW)

    s = await check(redis, keys)
    assert list(s.idem) == [keys.idem(raw)]
    assert raw not in keys.idem(raw)
    assert [k async for k in r.scan_iter(match=f"*{raw}*")] == []
    ttl = await r.pttl(keys.idem(raw))
    assert 0 < ttl <= WINDOW


async def test_duplicate_does_not_extend_the_window(broker: Broker, redis: Redis, keys: Keys) -> None:
    r: Any = redis
    await broker.enqueue(make_items(1, key="k"), WINDOW)
    await r.pexpire(keys.idem("k"), 5_000)

    results = await broker.enqueue(make_items(1, key="k"), WINDOW)

    assert results[0][1] is Outcome.DUPLICATE
    assert 0 < await r.pttl(keys.idem("k")) <= 5_000


async def test_key_expires_after_the_window_and_is_then_accepted_again(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    [first] = make_items(1, key="short")
    await broker.enqueue([first], 50)
    ttl = await r.pttl(keys.idem("short"))
    assert 0 < ttl <= 50

    await wait_gone(redis, keys.idem("short"))
    [second] = make_items(1, key="short")
    results = await broker.enqueue([second], 50)

    assert results == [(second[0], False)]
    s = await check(redis, keys)
    assert s.stream_ids() == [first[0], second[0]]
    assert s.counters == {"received": 2}
    assert s.idem == {keys.idem("short"): second[0]}


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
    r: Any = redis
    record = await r.get(keys.idem("k"))
    assert first[2] is not None
    assert record == first[0] + first[2].fingerprint.decode()  # 44 bytes

    results = await broker.enqueue([other, same, other], WINDOW)

    assert results == [
        (first[0], Outcome.CONFLICT),
        (first[0], Outcome.DUPLICATE),
        (first[0], Outcome.CONFLICT),
    ]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "duplicates": 1}
    assert await r.get(keys.idem("k")) == record


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
        keys.idem("order-1", "key:aaaaaaaaaaaa"): a[0],
        keys.idem("order-1", "ns:shop"): b[0],
        keys.idem("order-1"): anon[0],
    }
    assert len(s.idem) == 3
