"""EventStream.publish / publish_sync: the API's ingest without HTTP, on the real Redis.

Each answer is checked against what POST /events (the real app, in-process) answers for
the same event, on the same Redis keys.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream import Accepted, Event, EventStream
from eventstream.auth.apikeys import KeyRegistry
from eventstream.broker import Layout
from eventstream.broker.keys import idem_digest, order_digest
from eventstream.embedded import EmbeddedRedis
from eventstream.errors import (
    ConfigError,
    PartitionCountMismatch,
    PayloadTooLarge,
    Unavailable,
    Unconfirmed,
    ValidationError,
)
from eventstream.ingest.accept import conflict_message
from eventstream.settings import Settings
from tests.support.asgi import Api, MakeApi
from tests.support.factories import make_settings, recording_app
from tests.support.proxy import BLACKHOLE, PASS, RESET, FaultProxy
from tests.support.publishing import publishing

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_published_event_is_queued_and_handled_intact(app: EventStream, api: Api) -> None:
    accepted = await app.publish(
        "ORDER", {"n": [1, 2.5, None, True], "é": "ü"}, source="shop", severity="info",
        timestamp=WHEN, ordering_key="cart-7",
    )  # fmt: skip
    assert accepted == Accepted(accepted.event_id, False)
    assert await api.stream_len() == 1
    assert (await api.counters())["received"] == 1

    seen: list[Event] = []
    await api.burst(recording_app(seen))
    [event] = seen
    assert event.id == accepted.event_id
    assert (event.type, event.payload) == ("ORDER", {"n": [1, 2.5, None, True], "é": "ü"})
    assert (event.source, event.severity) == ("shop", "info")
    assert event.timestamp == "2026-01-02T03:04:05Z"
    assert event.ordering_key == "cart-7"
    assert (await api.store.get(accepted.event_id)) is not None


async def test_idempotency_key_dedupes_with_the_api_without_a_key(app: EventStream, api: Api) -> None:
    first = await app.publish("PAY", {"amount": 10}, idempotency_key="order-42")
    again = await app.publish("PAY", {"amount": 10}, idempotency_key="order-42")
    assert again == Accepted(first.event_id, True)
    # the anonymous namespace: the API without API keys sees the same key
    r = await api.post("PAY", {"amount": 10}, headers={"Idempotency-Key": "order-42"})
    assert (r.status_code, r.json()["eventId"], r.json()["duplicate"]) == (200, first.event_id, True)
    posted = await api.post("PAY", {"amount": 1}, headers={"Idempotency-Key": "order-43"})
    assert posted.status_code == 202
    assert await app.publish("PAY", {"amount": 1}, idempotency_key="order-43") == Accepted(
        posted.json()["eventId"], True
    )

    with pytest.raises(ValidationError) as conflict:
        await app.publish("PAY", {"amount": 11}, idempotency_key="order-42")
    assert conflict.value.detail == conflict_message("header Idempotency-Key")
    r = await api.post("PAY", {"amount": 11}, headers={"Idempotency-Key": "order-42"})
    assert (r.status_code, r.json()["detail"]) == (422, conflict.value.detail)
    assert await api.stream_len() == 2


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


# (what is wrong, publish's arguments); the API gets the body an HTTP client sends for them
BAD: list[tuple[str, dict[str, Any]]] = [
    ("type", {"type_": "no spaces", "payload": {}}),
    ("type not a string", {"type_": 7, "payload": {}}),
    ("payload not an object", {"type_": "T", "payload": [1, 2]}),
    ("payload too deep", {"type_": "T", "payload": {"a": [[[[[{"b": 1}]]]]]}}),
    ("payload far too deep", {"type_": "T", "payload": _deep(800)}),
    ("NUL in ordering key", {"type_": "T", "payload": {}, "ordering_key": "a\x00b"}),
    ("long ordering key", {"type_": "T", "payload": {}, "ordering_key": "k" * 257}),
    ("empty ordering key", {"type_": "T", "payload": {}, "ordering_key": ""}),
    ("naive timestamp", {"type_": "T", "payload": {}, "timestamp": datetime(2026, 1, 2)}),
    ("bad timestamp", {"type_": "T", "payload": {}, "timestamp": "yesterday"}),
    ("source not a string", {"type_": "T", "payload": {}, "source": 5}),
    ("key too long", {"type_": "T", "payload": {}, "idempotency_key": "k" * 257}),
    ("empty key", {"type_": "T", "payload": {}, "idempotency_key": ""}),
    ("long string", {"type_": "T", "payload": {"s": "x" * 101}}),
    ("many keys", {"type_": "T", "payload": {str(i): i for i in range(11)}}),
]


def _http(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers an HTTP client sends for ``publish``'s arguments."""
    body: dict[str, Any] = {"type": event["type_"], "payload": event["payload"]}
    for name, field in (("source", "source"), ("timestamp", "timestamp"), ("ordering_key", "orderingKey")):
        if name in event:
            value = event[name]
            body[field] = value.isoformat() if isinstance(value, datetime) else value
    headers = {"Idempotency-Key": event["idempotency_key"]} if "idempotency_key" in event else {}
    return body, headers


@pytest.mark.parametrize("event", [e for _, e in BAD], ids=[name for name, _ in BAD])
async def test_invalid_events_get_the_api_errors(make_api: MakeApi, event: dict[str, Any]) -> None:
    api = await make_api(max_depth=4, max_string_length=100, max_object_keys=10)
    args = dict(event)
    async with publishing(api.settings) as app:
        with pytest.raises(ValidationError) as refused:
            await app.publish(args.pop("type_"), args.pop("payload"), **args)
    body, headers = _http(event)
    r = await api.client.post("/events", json=body, headers=headers)
    assert r.status_code == refused.value.status == 422, r.text
    assert refused.value.errors, refused.value.detail
    assert refused.value.errors == r.json()["errors"]
    assert refused.value.detail == r.json()["detail"]
    assert await api.stream_len() == 0


async def test_too_large_and_unwritable_events_are_refused(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=32_768)
    async with publishing(api.settings) as app:
        with pytest.raises(PayloadTooLarge) as large:
            await app.publish("T", {"s": "x" * 33_000})
        r = await api.post("T", {"s": "x" * 33_000})
        assert (r.status_code, r.json()["detail"]) == (413, large.value.detail)
        for payload, where in (({"f": float("nan")}, "$.payload"), ({"o": object()}, "$.payload")):
            with pytest.raises(ValidationError) as bad:
                await app.publish("T", payload)
            assert bad.value.errors[0]["loc"] == where
        with pytest.raises(ValidationError) as deep:  # deeper than Python's json can write
            await app.publish("T", _deep(5000))
        raw = '{"type":"T","payload":' + '{"a":' * 5000 + "{}" + "}" * 5001
        r = await api.client.post("/events", content=raw, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["errors"]) == (422, deep.value.errors)
        with pytest.raises(ValidationError) as bad_key:
            await app.publish("T", {}, idempotency_key="a\x00b")
        assert bad_key.value.errors[0]["loc"] == "header.Idempotency-Key"
    assert await api.stream_len() == 0


async def test_backlog_over_the_bound_is_unavailable(make_api: MakeApi) -> None:
    api = await make_api(max_backlog=2)
    async with publishing(api.settings) as app:
        await app.publish("T", {"i": 1})
        await app.publish("T", {"i": 2})
        with pytest.raises(Unavailable) as shed:
            await app.publish("T", {"i": 3})
        assert shed.value.retry_after_s >= 1
        assert "EVENTSTREAM_MAX_BACKLOG" in shed.value.detail
        assert await api.stream_len() == 2
        await api.burst(recording_app([]))
        await asyncio.sleep(0.3)  # the next measurement of the backlog
        await app.publish("T", {"i": 3})


@pytest.fixture
def proxy(redis_server: EmbeddedRedis) -> Iterator[FaultProxy]:
    p = FaultProxy(redis_server.port).start()
    try:
        yield p
    finally:
        p.close()


async def test_unreachable_redis_is_unavailable_then_publishing_resumes(
    proxy: FaultProxy, prefix: str, tmp_path: Path, api: Api
) -> None:
    async with publishing(make_settings(proxy.url, prefix, tmp_path, redis_timeout=0.5)) as app:
        ids = [(await app.publish("T", {"i": 0}, idempotency_key="k0")).event_id]
        for i, fault in enumerate((RESET, BLACKHOLE), start=1):
            proxy.set(fault)
            with pytest.raises(Unavailable) as down:
                await asyncio.wait_for(app.publish("T", {"i": i}, idempotency_key=f"k{i}"), 10)
            assert down.value.retry_after_s >= 1
            proxy.set(PASS)
            # the key is safe to repeat: a blackholed write may have been applied
            ids.append((await app.publish("T", {"i": i}, idempotency_key=f"k{i}")).event_id)
    assert len(set(ids)) == 3
    assert await api.stream_len() == 3


def test_publish_sync_from_threads_accepts_each_event_once(settings: Settings) -> None:
    app = EventStream()
    app.configure_publisher(settings)
    try:
        assert app.publish_sync("T", {"alone": True}).duplicate is False
        results: dict[tuple[int, int], Accepted] = {}
        errors: list[BaseException] = []

        def send(t: int) -> None:
            try:
                for i in range(5):
                    results[(t, i)] = app.publish_sync("T", {"t": t, "i": i}, idempotency_key=f"{t}-{i}")
            except BaseException as exc:
                errors.append(exc)

        for _round in range(2):  # the second round repeats every key: duplicates only
            threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            assert not errors, errors
            if _round == 0:
                first = dict(results)
                assert not any(a.duplicate for a in first.values())
        assert len({a.event_id for a in first.values()}) == 40
        assert {k: a.event_id for k, a in results.items()} == {k: a.event_id for k, a in first.items()}
        assert all(a.duplicate for a in results.values())
    finally:
        app.close_publisher()
    assert asyncio.run(_stream_len(settings)) == 41


async def _stream_len(settings: Settings) -> int:
    from eventstream.broker import connect

    assert settings.redis_url
    redis = await connect(settings.redis_url)
    try:
        layout = Layout(settings.prefix, settings.partitions)
        return sum([int(await redis.xlen(part.stream)) for part in layout.parts])
    finally:
        await redis.aclose()


async def test_publish_sync_inside_a_running_loop_says_to_await(app: EventStream) -> None:
    with pytest.raises(RuntimeError, match=r"await app\.publish"):
        app.publish_sync("T", {})


def test_publish_from_one_loop_after_another(settings: Settings) -> None:
    app = EventStream()
    app.configure_publisher(settings)

    async def one(i: int) -> Accepted:
        return await app.publish("T", {"i": i})

    try:
        app.publish_sync("T", {"i": 0})  # the publish_sync loop keeps its connections meanwhile
        first = asyncio.run(one(1))
        assert len(app.publisher._lanes) == 1  # the first loop's closed with it
        second = asyncio.run(one(2))
        app.publish_sync("T", {"i": 3})
    finally:
        app.close_publisher()
    assert not app.publisher._lanes
    assert first.event_id != second.event_id
    assert asyncio.run(_stream_len(settings)) == 4


def test_no_redis_configured_is_a_clear_error_and_up_is_found(
    settings: Settings, tmp_path: Path, redis_url: str
) -> None:
    app = EventStream()
    app.configure_publisher(settings.model_copy(update={"redis_url": None}))
    with pytest.raises(ConfigError, match="EVENTSTREAM_REDIS_URL"):
        app.publish_sync("T", {})
    # `eventstream up` with this data dir: its embedded server wrote its URL there
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "url").write_text(redis_url + "\n")
    try:
        accepted = app.publish_sync("T", {})
    finally:
        app.close_publisher()
    assert accepted.duplicate is False
    assert asyncio.run(_stream_len(settings)) == 1


def _part_of_entry(redis: Redis, layout: Layout) -> Any:
    async def where(event_id: str) -> int | None:
        r: Any = redis
        for i, part in enumerate(layout.parts):
            for _entry, fields in await r.xrange(part.stream, "-", "+"):
                if event_id in str(fields):
                    return i
        return None

    return where


async def test_partitions_route_as_the_api_does(make_api: MakeApi, redis: Redis) -> None:
    api = await make_api(partitions=4)
    layout = api.broker.layout
    where = _part_of_entry(redis, layout)
    async with publishing(api.settings) as app:
        for i in range(8):
            key = f"line-{i}"
            published = await app.publish("T", {"i": i}, ordering_key=key)
            assert await where(published.event_id) == layout.partition_of(order_digest(key))
            idem = f"idem-{i}"
            keyed = await app.publish("T", {"i": i}, idempotency_key=idem)
            assert await where(keyed.event_id) == layout.partition_of(idem_digest(idem, None))
            r = await api.post("T", {"i": i}, headers={"Idempotency-Key": idem})
            assert (r.status_code, r.json()["eventId"]) == (200, keyed.event_id)
            both = await app.publish("T", {"i": i}, ordering_key=key, idempotency_key=f"both-{i}")
            assert (await app.publish("T", {"i": i}, ordering_key=key, idempotency_key=f"both-{i}")) == (
                Accepted(both.event_id, True)
            )
    assert {layout.partition_of(order_digest(f"line-{i}")) for i in range(8)} != {0}


async def test_a_shared_namespace_dedupes_with_the_api_keys_created_with_it(api: Api) -> None:
    _, token = await KeyRegistry(api.broker).create("svc", "ingest", None, None, namespace="team")
    with pytest.raises(ConfigError, match="namespace"):
        EventStream().configure_publisher(api.settings, namespace="no spaces")
    team = EventStream()
    team.configure_publisher(api.settings, namespace="team")
    try:
        mine = await team.publish("T", {}, idempotency_key="k")
        headers = {"Idempotency-Key": "k", "Authorization": f"Bearer {token}"}
        r = await api.post("T", {}, headers=headers)
        assert (r.status_code, r.json()["eventId"]) == (200, mine.event_id)
        with pytest.raises(ConfigError, match="in use"):
            team.configure_publisher(api.settings)
    finally:
        await team.aclose_publisher()
    async with publishing(api.settings) as anonymous:  # the anonymous namespace is another
        assert (await anonymous.publish("T", {}, idempotency_key="k")).duplicate is False


async def test_unconfirmed_by_replicas_is_unconfirmed_with_the_outcome(
    redis_url: str, prefix: str, tmp_path: Path, api: Api
) -> None:
    # the session's server has no replica: the wait for one ends unconfirmed
    unsafe = make_settings(redis_url, prefix, tmp_path, redis_wait_replicas=1, redis_wait_timeout=0.2)
    async with publishing(unsafe) as app:
        with pytest.raises(Unconfirmed) as first:
            await app.publish("T", {"a": 1}, idempotency_key="k")
        [queued] = first.value.results
        assert isinstance(queued, Accepted)
        assert queued.duplicate is False
        with pytest.raises(Unconfirmed) as again:
            await app.publish("T", {"a": 1}, idempotency_key="k")
        assert again.value.results == [Accepted(queued.event_id, True)]
        with pytest.raises(ValidationError, match="already used"):
            await app.publish("T", {"a": 2}, idempotency_key="k")
    assert await api.stream_len() == 1


async def test_a_partition_count_other_than_the_deployments_is_refused(make_api: MakeApi) -> None:
    api = await make_api(partitions=4)
    await api.accepted("T", {})  # a deployment that holds events keeps its count
    async with publishing(api.settings.model_copy(update={"partitions": 2})) as app:
        with pytest.raises(PartitionCountMismatch, match="EVENTSTREAM_PARTITIONS=4") as refused:
            await app.publish("T", {})
    assert isinstance(refused.value, Unavailable)
    assert (await api.counters())["received"] == 1


async def test_a_restarted_up_is_followed_through_its_url_file(
    proxy: FaultProxy, settings: Settings, redis_url: str, api: Api
) -> None:
    url_file = settings.data_dir / "redis" / "url"
    url_file.parent.mkdir()
    url_file.write_text(proxy.url + "\n")  # `eventstream up`'s server, here behind the proxy
    async with publishing(settings.model_copy(update={"redis_url": None})) as app:
        await app.publish("T", {"i": 1})
        proxy.set(RESET)  # that server stops; another starts and writes its URL
        url_file.write_text(redis_url + "\n")
        with pytest.raises(Unavailable):
            await app.publish("T", {"i": 2}, idempotency_key="two")
        await app.publish("T", {"i": 2}, idempotency_key="two")  # through the new URL
        url_file.unlink()
        assert len(app.publisher._lanes) == 1
    assert await api.stream_len() == 2
