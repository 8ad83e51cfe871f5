"""POST /events: acceptance, idempotency, validation, body limits, Redis down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import default_app
from eventstream.broker import Keys
from tests.support.asgi import Api, MakeApi, assert_problem


async def test_accepts_an_event_and_queues_it(api: Api) -> None:
    r = await api.client.post(
        "/events",
        json={
            "type": "LOGIN",
            "payload": {"user": "ana", "n": [1, 2.5, None, True]},
            "source": "web",
            "severity": "info",
            "timestamp": "2026-01-02T03:04:05+01:00",
        },
    )
    assert r.status_code == 202
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"message", "eventId", "duplicate"}
    assert body["duplicate"] is False
    assert isinstance(body["message"], str)
    assert body["message"]
    event_id = body["eventId"]
    assert await api.stream_len() == 1
    assert (await api.counters())["received"] == 1

    got = (await api.client.get(f"/events/{event_id}")).json()
    assert got["status"] == "queued"
    assert got["type"] == "LOGIN"
    assert got["payload"] == {"user": "ana", "n": [1, 2.5, None, True]}
    assert got["source"] == "web"
    assert got["severity"] == "info"
    assert got["timestamp"] == "2026-01-02T02:04:05Z"  # normalised to UTC


async def test_each_post_gets_its_own_id(api: Api) -> None:
    ids = [await api.accepted("T", {"i": i}) for i in range(5)]
    assert len(set(ids)) == 5
    assert await api.stream_len() == 5


async def test_idempotency_key_header_makes_a_repeat_a_duplicate(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post("PAYMENT", {"amount": 10}, headers=headers)
    assert first.status_code == 202
    assert first.json()["duplicate"] is False
    # a repeat is the same event and enqueues nothing (with another payload: 422)
    again = await api.post("PAYMENT", {"amount": 10}, headers=headers)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["eventId"] == first.json()["eventId"]
    assert await api.stream_len() == 1
    counters = await api.counters()
    assert counters["received"] == 1
    assert counters["duplicates"] == 1
    # another key is another event
    other = await api.post("PAYMENT", {"amount": 10}, headers={"Idempotency-Key": "order-43"})
    assert other.status_code == 202
    assert await api.stream_len() == 2


async def test_body_id_makes_a_repeat_a_duplicate(api: Api) -> None:
    first = await api.post("PAYMENT", {"amount": 1}, id="client-id-1")
    assert first.status_code == 202
    again = await api.post("PAYMENT", {"amount": 1}, id="client-id-1")
    assert again.status_code == 200
    assert again.json() | {"message": ""} == {
        "message": "",
        "eventId": first.json()["eventId"],
        "duplicate": True,
    }
    assert await api.stream_len() == 1
    got = (await api.client.get(f"/events/{first.json()['eventId']}")).json()
    assert got["idempotencyKey"] == "client-id-1"


async def test_duplicate_after_processing_is_still_a_duplicate(api: Api) -> None:
    first = await api.post("T", {}, headers={"Idempotency-Key": "k"})
    await api.burst(default_app())
    assert await api.store.count() == 1
    again = await api.post("T", {}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert again.json()["eventId"] == first.json()["eventId"]
    assert await api.stream_len() == 0
    assert (await api.counters())["received"] == 1


async def test_key_is_forgotten_after_the_dedupe_window(redis: Redis, make_api: MakeApi) -> None:
    api = await make_api(dedupe_window=0.05)
    first = await api.post("T", {}, headers={"Idempotency-Key": "short-lived"})
    assert first.status_code == 202
    record = Keys(api.settings.prefix).dedupe("short-lived")
    ttl_ms = await redis.pttl(record.hash)
    assert 0 < ttl_ms <= 50  # the record lasts the dedupe window, and its hash no longer
    await asyncio.sleep(ttl_ms / 1000 + 0.01)
    again = await api.post("T", {}, headers={"Idempotency-Key": "short-lived"})
    assert again.status_code == 202
    assert again.json()["eventId"] != first.json()["eventId"]
    assert await api.stream_len() == 2


async def test_fifty_concurrent_identical_posts_enqueue_one_event(api: Api) -> None:
    async def post() -> tuple[int, str, bool]:
        r = await api.post("PAYMENT", {"amount": 5}, headers={"Idempotency-Key": "same-key"})
        body = r.json()
        return r.status_code, body["eventId"], body["duplicate"]

    results = await asyncio.gather(*(post() for _ in range(50)))
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200] * 49 + [202]
    assert len({event_id for _, event_id, _ in results}) == 1
    assert sum(1 for _, _, dup in results if not dup) == 1
    assert await api.stream_len() == 1
    counters = await api.counters()
    assert counters["received"] == 1
    assert counters["duplicates"] == 49


async def test_type_of_128_characters_is_accepted(api: Api) -> None:
    assert (await api.post("A" * 128)).status_code == 202


async def test_payload_at_max_depth_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(max_depth=4)
    payload: dict[str, Any] = {"a": {"b": {"c": [1, "x"]}}}  # four levels: three objects and a list
    assert (await api.post("T", payload)).status_code == 202
    assert (await api.post("T", nested(4))).status_code == 202


async def test_flat_payload_is_one_level(make_api: MakeApi) -> None:
    api = await make_api(max_depth=1)
    assert (await api.post("T", {"a": 1, "b": "x", "c": None})).status_code == 202
    assert_problem(await api.post("T", {"a": {}}), 422, "payload")


def nested(levels: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(levels - 1):
        payload = {"x": payload}
    return payload


INVALID: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("type with a space", b'{"type": "a b", "payload": {}}', ("type",)),
    ("type with a slash", b'{"type": "a/b", "payload": {}}', ("type",)),
    ("empty type", b'{"type": "", "payload": {}}', ("type",)),
    ("type too long", json.dumps({"type": "A" * 129, "payload": {}}).encode(), ("type",)),
    ("type not a string", b'{"type": 7, "payload": {}}', ("type",)),
    ("payload is a list", b'{"type": "T", "payload": [1]}', ("payload",)),
    ("payload is a string", b'{"type": "T", "payload": "x"}', ("payload",)),
    ("payload is null", b'{"type": "T", "payload": null}', ("payload",)),
    ("missing type", b'{"payload": {}}', ("type",)),
    ("missing payload", b'{"type": "T"}', ("payload",)),
    ("unknown field", b'{"type": "T", "payload": {}, "colour": "red"}', ("colour",)),
    ("timestamp not a date", b'{"type": "T", "payload": {}, "timestamp": "yesterday"}', ("timestamp",)),
    (
        "timestamp without zone",
        b'{"type": "T", "payload": {}, "timestamp": "2026-01-01T00:00:00"}',
        ("timestamp",),
    ),
    ("source too long", json.dumps({"type": "T", "payload": {}, "source": "s" * 257}).encode(), ("source",)),
    (
        "severity too long",
        json.dumps({"type": "T", "payload": {}, "severity": "s" * 33}).encode(),
        ("severity",),
    ),
    ("NUL in source", b'{"type": "T", "payload": {}, "source": "a\\u0000b"}', ("source",)),
    ("empty id", b'{"type": "T", "payload": {}, "id": ""}', ("id",)),
    ("id too long", json.dumps({"type": "T", "payload": {}, "id": "i" * 257}).encode(), ("id",)),
    ("body is a list", b'[{"type": "T", "payload": {}}]', ("object",)),
    ("body is null", b"null", ("object",)),
    ("invalid JSON", b'{"type": "T", "payload": {', ("JSON",)),
    ("trailing garbage", b'{"type": "T", "payload": {}} x', ("JSON",)),
    ("not UTF-8", b'{"type": "T", "payload": {"a": "\xff"}}', ("UTF-8",)),
    ("number out of range", b'{"type": "T", "payload": {"a": 1e400}}', ("payload",)),
    ("nested past max_depth", json.dumps({"type": "T", "payload": nested(33)}).encode(), ("payload", "32")),
    (
        "nested past the decoder's recursion limit",
        b'{"type": "T", "payload": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
        ("payload", "nested"),
    ),
]


@pytest.mark.parametrize(("body", "words"), [(b, w) for _, b, w in INVALID], ids=[n for n, _, _ in INVALID])
async def test_invalid_event_is_422_naming_the_field_and_enqueues_nothing(
    api: Api, body: bytes, words: tuple[str, ...]
) -> None:
    r = await api.client.post("/events", content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, 422, *words)
    assert isinstance(problem.get("errors"), list)
    assert await api.stream_len() == 0
    assert (await api.counters()).get("received", 0) == 0


async def test_empty_body_is_422(api: Api) -> None:
    r = await api.client.post("/events", content=b"")
    assert_problem(r, 422, "empty")
    assert await api.stream_len() == 0


async def test_depth_limit_follows_the_setting(make_api: MakeApi) -> None:
    api = await make_api(max_depth=4)
    r = await api.client.post("/events", json={"type": "T", "payload": nested(5)})
    assert_problem(r, 422, "payload", "4")
    r = await api.client.post("/events", json={"type": "T", "payload": {"a": [[[[1]]]]}})
    assert_problem(r, 422, "payload", "4")
    assert await api.stream_len() == 0


@pytest.mark.parametrize("key", ["", "k" * 257], ids=["empty", "257 characters"])
async def test_bad_idempotency_key_is_422(api: Api, key: str) -> None:
    r = await api.post("T", {}, headers={"Idempotency-Key": key})
    assert_problem(r, 422, "Idempotency-Key")
    assert await api.stream_len() == 0


async def test_idempotency_key_of_256_characters_is_accepted(api: Api) -> None:
    r = await api.post("T", {}, headers={"Idempotency-Key": "k" * 256})
    assert r.status_code == 202


async def test_content_length_that_is_not_a_number_is_422(api: Api) -> None:
    r = await api.client.post(
        "/events", content=b'{"type": "T", "payload": {}}', headers={"Content-Length": "lots"}
    )
    assert_problem(r, 422, "Content-Length")
    assert await api.stream_len() == 0


def body_of_size(size: int) -> bytes:
    base = b'{"type": "T", "payload": {"pad": ""}}'
    body = base.replace(b'""', b'"' + b"x" * (size - len(base)) + b'"')
    assert len(body) == size
    return body


async def test_body_at_the_limit_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    r = await api.client.post("/events", content=body_of_size(2048))
    assert r.status_code == 202, r.text


async def test_body_over_the_limit_with_content_length_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    r = await api.client.post("/events", content=body_of_size(2049))
    assert r.request.headers["content-length"] == "2049"
    assert_problem(r, 413, "2048")
    assert await api.stream_len() == 0


async def test_body_over_the_limit_without_content_length_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    body = body_of_size(10_000)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    r = await api.client.post("/events", content=chunks())
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "2048")
    assert await api.stream_len() == 0


async def test_streamed_body_under_the_limit_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    body = body_of_size(1500)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    r = await api.client.post("/events", content=chunks())
    assert "content-length" not in r.request.headers
    assert r.status_code == 202, r.text


async def test_post_with_redis_down_is_503_with_retry_after(down_api: Api) -> None:
    r = await down_api.post("T", {"a": 1})
    problem = assert_problem(r, 503, "retry")
    assert int(r.headers["retry-after"]) >= 1
    assert problem["status"] == 503
    r = await down_api.post("T", {"a": 1}, headers={"Idempotency-Key": "k"})
    assert_problem(r, 503)
    r = await down_api.client.post("/events/batch", json={"events": [{"type": "T", "payload": {}}]})
    assert_problem(r, 503)
    assert int(r.headers["retry-after"]) >= 1


async def test_an_api_that_never_reached_redis_answers_503_not_422(down_api: Api) -> None:
    # it cannot know whether API keys exist, so it serves nobody anonymously (fail closed);
    # tests/security/test_anonymous.py: 422 once it has learned, before Redis went down
    r = await down_api.client.post("/events", content=b'{"type": "T"}')
    assert_problem(r, 503, "API keys")
