"""Rate limits: GCRA in Redis, per key (and per address for anonymous use), cluster-wide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from eventstream.auth.apikeys import MAX_BURST, MIN_RATE, KeyRegistry
from eventstream.broker import Keys
from tests.support.asgi import Api, MakeApi, assert_problem
from tests.support.auth import EVENT, NewKey, bearer, create_key


def batch(n: int) -> dict[str, object]:
    return {"events": [EVENT] * n}


async def test_over_the_limit_is_429_with_headers_and_nothing_is_enqueued(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=0.01, burst=3)  # 3 at once, then one per 100 s
    for left in (2, 1, 0):
        r = await api.client.post("/events", json=EVENT, headers=bearer(token))
        assert r.status_code == 202
        assert r.headers["ratelimit-limit"] == "3"
        assert r.headers["ratelimit-remaining"] == str(left)
        assert int(r.headers["ratelimit-reset"]) > 0
    r = await api.client.post("/events", json=EVENT, headers=bearer(token))
    body = assert_problem(r, 429, "rate limit")
    assert "nothing was done" in body["detail"].lower()
    assert 90 <= int(r.headers["retry-after"]) <= 101
    assert r.headers["ratelimit-limit"] == "3"
    assert r.headers["ratelimit-remaining"] == "0"
    assert int(r.headers["ratelimit-reset"]) > 0
    assert await api.stream_len() == 3
    assert (await api.counters())["received"] == 3


async def test_a_batch_counts_as_its_number_of_events(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=0.01, burst=5)
    r = await api.client.post("/events/batch", json=batch(4), headers=bearer(token))
    assert r.status_code == 200
    assert r.headers["ratelimit-remaining"] == "1"
    r = await api.client.post("/events/batch", json=batch(2), headers=bearer(token))
    assert_problem(r, 429)
    assert await api.stream_len() == 4  # the refused batch enqueued none of its events
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202


async def test_a_batch_larger_than_the_burst_is_413_and_not_charged(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=1, burst=2)
    r = await api.client.post("/events/batch", json=batch(3), headers=bearer(token))
    assert_problem(r, 413, "burst")
    assert await api.stream_len() == 0
    r = await api.client.post("/events/batch", json=batch(2), headers=bearer(token))
    assert r.status_code == 200


async def test_a_wrong_secret_never_charges_the_keys_bucket(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=0.01, burst=1)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(3):
        assert (await api.client.post("/events", json=EVENT, headers=bearer(forged))).status_code == 401
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202


async def test_a_wrong_scope_never_charges_the_keys_bucket(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=0.01, burst=1)
    assert (await api.client.get("/events", headers=bearer(token))).status_code == 403
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202


async def test_the_limit_holds_across_api_processes(make_api: MakeApi) -> None:
    one, two = await make_api(), await make_api()
    token = await create_key(one, "ingest", rate=0.01, burst=2)
    assert (await one.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    assert (await two.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    assert_problem(await one.client.post("/events", json=EVENT, headers=bearer(token)), 429)
    assert_problem(await two.client.post("/events", json=EVENT, headers=bearer(token)), 429)


async def test_keys_have_separate_buckets_and_unlimited_keys_no_headers(api: Api, new_key: NewKey) -> None:
    a, b = await new_key("ingest", rate=0.01, burst=1), await new_key("ingest", rate=0.01, burst=1)
    free = await new_key("ingest")
    assert (await api.client.post("/events", json=EVENT, headers=bearer(a))).status_code == 202
    assert (await api.client.post("/events", json=EVENT, headers=bearer(b))).status_code == 202
    r = await api.client.post("/events", json=EVENT, headers=bearer(free))
    assert r.status_code == 202
    assert "ratelimit-limit" not in r.headers


async def test_reads_are_limited_too(api: Api, new_key: NewKey) -> None:
    token = await new_key("read", rate=0.01, burst=1)
    assert (await api.client.get("/events", headers=bearer(token))).status_code == 200
    assert_problem(await api.client.get("/events", headers=bearer(token)), 429)


async def test_anonymous_loopback_use_is_limited_per_address_when_set(
    redis: Redis, make_api: MakeApi
) -> None:
    api = await make_api(anonymous_rate=0.01, anonymous_burst=2)
    assert (await api.client.post("/events", json=EVENT)).status_code == 202
    r = await api.client.post("/events", json=EVENT)
    assert r.status_code == 202
    assert r.headers["ratelimit-remaining"] == "0"
    r = await api.client.post("/events", json=EVENT)
    assert_problem(r, 429, "client address")
    assert "retry-after" in r.headers
    assert await api.stream_len() == 2
    # the bucket is keyed by a hash of the address, never the raw address
    keys = [k async for k in redis.scan_iter(f"{{{api.settings.prefix}}}:rate:*")]
    assert len(keys) == 1
    assert "127.0.0.1" not in keys[0]


async def test_anonymous_use_has_no_limit_by_default(api: Api) -> None:
    for _ in range(20):
        r = await api.client.post("/events", json=EVENT)
        assert r.status_code == 202
        assert "ratelimit-limit" not in r.headers


async def test_the_limit_refills_over_time(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=20, burst=1)  # one per 50 ms
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    r = await api.client.post("/events", json=EVENT, headers=bearer(token))
    if r.status_code == 429:
        assert r.headers["retry-after"] == "1"
    await asyncio.sleep(0.2)
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    key = await KeyRegistry(api.broker).get(token.split("_")[1])
    assert key.rate == 20


async def test_limited_answers_carry_the_policy(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=0.5, burst=3)  # 3 at once, refilled in 6 s
    r = await api.client.post("/events", json=EVENT, headers=bearer(token))
    assert r.headers["ratelimit-policy"] == "3;w=6"
    for _ in range(2):
        await api.client.post("/events", json=EVENT, headers=bearer(token))
    r = await api.client.post("/events", json=EVENT, headers=bearer(token))
    assert_problem(r, 429)
    assert r.headers["ratelimit-policy"] == "3;w=6"


async def test_the_smallest_rate_and_largest_burst_work(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest", rate=MIN_RATE, burst=MAX_BURST)
    r = await api.client.post("/events/batch", json=batch(5), headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["ratelimit-remaining"] == str(MAX_BURST - 5)


async def test_the_script_writes_huge_times_as_integers(redis: Redis, api: Api) -> None:
    """A rate far below the minimum (not accepted for keys) still never breaks the script:
    its expiry, 1e15 ms, must reach Redis as digits, not as 1e+15."""
    bucket = Keys(api.settings.prefix).addr_bucket("tiny")
    reply = await api.broker.authorize_address("tiny", 1, rate=1e-12, burst=1)
    assert int(reply[0]) == 3
    assert int(await redis.pttl(bucket)) > 10**14


async def test_a_malformed_token_is_refused_before_the_batch_is_read(api: Api, new_key: NewKey) -> None:
    await new_key("ingest")
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b'{"events": [', b'{"type": "T", "payload": {}}', b"]}"):
            read.append(chunk)
            yield chunk

    r = await api.client.post("/events/batch", content=body(), headers=bearer("es_not-a-key"))
    assert_problem(r, 401, "not valid")
    assert read == []
    r = await api.client.post("/events/batch", content=body())  # no key where one is needed
    assert_problem(r, 401, "requires an API key")
    assert read == []


async def test_a_batch_with_a_key_and_a_bad_content_length_is_422(api: Api, new_key: NewKey) -> None:
    """Raised in the middleware, which reads a keyed batch to count its events."""
    token = await new_key("ingest", rate=100)
    r = await api.client.post(
        "/events/batch", content=b'{"events": []}', headers={"Content-Length": "lots", **bearer(token)}
    )
    assert_problem(r, 422, "Content-Length")
    assert await api.stream_len() == 0
