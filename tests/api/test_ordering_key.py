"""orderingKey over HTTP: validated on POST /events and in each batch item, part of an
idempotency key's event, shown by GET /events, GET /events/{id} (with parkedAt while the
event waits behind its key's earlier events), GET /failed-events, and in the OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.asgi import Api, assert_problem
from tests.support.factories import failing_app, recording_app

KEY = "account-7"


@pytest.mark.parametrize("key", ["k", "k" * 256, "ünï 🗝"], ids=["1 character", "256 characters", "unicode"])
async def test_an_ordering_key_of_1_to_256_characters_is_accepted_and_kept(api: Api, key: str) -> None:
    event_id = await api.accepted("T", {}, orderingKey=key)
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert (got["status"], got["orderingKey"]) == ("queued", key)
    assert "parkedAt" not in got


INVALID: list[tuple[str, Any, str]] = [
    ("empty", "", "length >= 1"),
    ("257 characters", "k" * 257, "length <= 256"),
    ("NUL", "a\x00b", "regex"),
    ("number", 7, "Expected `str | null`"),
    ("list", ["a"], "Expected `str | null`"),
    ("object", {"k": "a"}, "Expected `str | null`"),
    ("boolean", True, "Expected `str | null`"),
]


@pytest.mark.parametrize(("key", "msg"), [(k, m) for _, k, m in INVALID], ids=[n for n, _, _ in INVALID])
async def test_an_invalid_ordering_key_is_422_naming_it_and_enqueues_nothing(
    api: Api, key: Any, msg: str
) -> None:
    r = await api.post("T", {}, orderingKey=key)
    problem = assert_problem(r, 422, "$.orderingKey")
    [error] = problem["errors"]
    assert error["loc"] == "$.orderingKey"
    assert msg in error["msg"]
    assert await api.stream_len() == 0
    assert (await api.counters()).get("received", 0) == 0


async def test_a_null_ordering_key_is_no_key(api: Api) -> None:
    r = await api.client.post("/events", content=b'{"type": "T", "payload": {}, "orderingKey": null}')
    assert r.status_code == 202, r.text
    got = (await api.client.get(f"/events/{r.json()['eventId']}")).json()
    assert got["orderingKey"] is None


async def test_a_bad_ordering_key_in_a_batch_item_does_not_sink_the_others(api: Api) -> None:
    events: list[dict[str, Any]] = [
        {"type": "T", "payload": {"n": 0}, "orderingKey": KEY},
        {"type": "T", "payload": {"n": 1}, "orderingKey": ""},
        {"type": "T", "payload": {"n": 2}, "orderingKey": "k" * 257},
        {"type": "T", "payload": {"n": 3}, "orderingKey": "a\x00b"},
        {"type": "T", "payload": {"n": 4}, "orderingKey": 4},
        {"type": "T", "payload": {"n": 5}, "orderingKey": "k" * 256},
        {"type": "T", "payload": {"n": 6}},
    ]
    r = await api.client.post("/events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 4)
    results = body["results"]
    assert [x["status"] for x in results] == [202, 422, 422, 422, 422, 202, 202]
    assert all("$.orderingKey" in results[i]["error"] for i in (1, 2, 3, 4))
    keys = [
        (await api.client.get(f"/events/{results[i]['eventId']}")).json()["orderingKey"] for i in (0, 5, 6)
    ]
    assert keys == [KEY, "k" * 256, None]
    assert (await api.counters())["received"] == 3


async def test_an_idempotency_key_names_one_event_ordering_key_included(api: Api) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await api.post("PAYMENT", {"amount": 1}, orderingKey=KEY, headers=headers)
    assert first.status_code == 202, first.text
    again = await api.post("PAYMENT", {"amount": 1}, orderingKey=KEY, headers=headers)
    assert again.status_code == 200, again.text
    assert (again.json()["duplicate"], again.json()["eventId"]) == (True, first.json()["eventId"])
    # one partition: the key's one record sees the other ordering key, or none, as another event
    other = await api.post("PAYMENT", {"amount": 1}, orderingKey="account-8", headers=headers)
    assert_problem(other, 422, "Idempotency-Key", "different event")
    without = await api.post("PAYMENT", {"amount": 1}, headers=headers)
    assert_problem(without, 422, "Idempotency-Key", "different event")
    counters = await api.counters()
    assert (counters["received"], counters["duplicates"]) == (1, 1)


async def test_a_body_id_names_one_event_ordering_key_included(api: Api) -> None:
    first = await api.post("T", {}, id="client-1", orderingKey=KEY)
    assert first.status_code == 202
    assert (await api.post("T", {}, id="client-1", orderingKey=KEY)).status_code == 200
    assert_problem(await api.post("T", {}, id="client-1", orderingKey="other"), 422, "id")


async def test_a_second_event_of_a_busy_key_is_parked_and_says_since_when(api: Api) -> None:
    first = await api.accepted("T", {"n": 1}, orderingKey=KEY)
    second = await api.accepted("T", {"n": 2}, orderingKey=KEY)
    other = await api.accepted("T", {"n": 3}, orderingKey="another key")
    a, b, c = [(await api.client.get(f"/events/{i}")).json() for i in (first, second, other)]
    assert (a["status"], a["orderingKey"], "parkedAt" in a) == ("queued", KEY, False)
    assert (b["status"], b["orderingKey"]) == ("queued", KEY)
    assert b["parkedAt"].endswith("Z")
    assert b["parkedAt"] >= b["receivedAt"]
    assert (c["status"], "parkedAt" in c) == ("queued", False)  # other keys never wait
    assert await api.stream_len() == 2

    seen: list[Any] = []
    await api.burst(recording_app(seen))
    assert [e.id for e in seen if e.ordering_key == KEY] == [first, second]
    b = (await api.client.get(f"/events/{second}")).json()
    assert (b["status"], b["orderingKey"], "parkedAt" in b) == ("processed", KEY, False)


async def test_processed_events_show_their_ordering_key(api: Api) -> None:
    keyed = await api.accepted("T", {"n": 1}, orderingKey=KEY)
    plain = await api.accepted("T", {"n": 2})
    seen: list[Any] = []
    await api.burst(recording_app(seen))
    assert {e.id: e.ordering_key for e in seen} == {keyed: KEY, plain: None}
    items = (await api.client.get("/events")).json()["items"]
    assert {i["id"]: i["orderingKey"] for i in items} == {keyed: KEY, plain: None}
    one = (await api.client.get(f"/events/{keyed}")).json()
    assert (one["status"], one["orderingKey"]) == ("processed", KEY)
    row = await api.store.get(keyed)
    assert row is not None
    assert row.ordering_key == KEY


async def test_dead_events_show_their_ordering_key(api: Api) -> None:
    keyed = await api.accepted("PERM", {"n": 1}, orderingKey=KEY)
    plain = await api.accepted("PERM", {"n": 2})
    await api.burst(failing_app())
    page = (await api.client.get("/failed-events")).json()
    assert {i["id"]: i["orderingKey"] for i in page["items"]} == {keyed: KEY, plain: None}
    assert (await api.client.get(f"/failed-events/{keyed}")).json()["orderingKey"] == KEY
    got = (await api.client.get(f"/events/{keyed}")).json()
    assert (got["status"], got["orderingKey"]) == ("dead", KEY)


async def test_the_openapi_document_describes_the_ordering_key(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    schemas = r.json()["components"]["schemas"]
    field = json.dumps(schemas["IncomingEvent"]["properties"]["orderingKey"])
    assert '"minLength": 1' in field
    assert '"maxLength": 256' in field
    assert "in the order they were accepted" in field
    assert "key_concurrency" in field
    assert "orderingKey" in schemas["DeadEvent"]["properties"]
    batch = schemas["BatchBody"]["properties"]["events"]["items"]
    assert batch == {"$ref": "#/components/schemas/IncomingEvent"}
