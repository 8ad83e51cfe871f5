"""The tests' conservation checks take the law from the product's audit: a lost event
fails them with the audit's account of it, before any check of their own."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from eventstream.store import SqlStore
from tests.support.broker import ingest
from tests.support.conservation import assert_conserved, check


async def lose_one(redis: Redis, keys: Keys) -> str:
    """Drop one queued event from the stream and the status hash, as a bug would."""
    [(entry, fields), *_] = await redis.xrange(keys.stream)
    await redis.xdel(keys.stream, entry)
    await redis.hdel(keys.status, fields["id"])
    event_id: str = fields["id"]
    return event_id


async def test_check_takes_the_law_from_the_audit(broker: Broker, redis: Redis) -> None:
    await ingest(broker, 3)
    s = await check(redis, broker.keys)
    assert len(s.stream) == 3
    await lose_one(redis, broker.keys)
    with pytest.raises(AssertionError, match=r"conservation broken: received 3 != .* = 2 \(-1\)"):
        await check(redis, broker.keys)


async def test_assert_conserved_takes_the_law_from_the_audit(
    broker: Broker, redis: Redis, store: SqlStore
) -> None:
    items = await ingest(broker, 2)
    ids = [event_id for event_id, _, _ in items]
    assert await assert_conserved(redis, broker, store, ids) == {i: "stream" for i in ids}
    lost = await lose_one(redis, broker.keys)
    assert lost in ids
    with pytest.raises(AssertionError, match="conservation broken: received 2"):
        await assert_conserved(redis, broker, store, ids)
