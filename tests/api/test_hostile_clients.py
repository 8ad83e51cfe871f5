"""What a careless or hostile client sends: answered with a 4xx that says what is wrong,
never a 500, never a silent misreading, and a bad batch item never sinks the others."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream.app import default_app
from tests.support.asgi import Api, assert_problem

EDGE_TIMESTAMPS = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+12:00"]


# --- timestamps at the edge of the date range --------------------------------------


@pytest.mark.parametrize("timestamp", EDGE_TIMESTAMPS)
async def test_a_timestamp_that_leaves_the_date_range_in_utc_is_422(api: Api, timestamp: str) -> None:
    r = await api.post("T", {}, timestamp=timestamp)
    assert_problem(r, 422, "timestamp", "range")
    assert await api.stream_len() == 0


async def test_timestamps_just_inside_the_range_are_kept_in_utc(api: Api) -> None:
    late = await api.accepted("T", {}, timestamp="9999-12-31T23:59:59+00:00")
    early = await api.accepted("T", {}, timestamp="0001-01-01T12:00:00+12:00")
    assert (await api.client.get(f"/events/{late}")).json()["timestamp"] == "9999-12-31T23:59:59Z"
    assert (await api.client.get(f"/events/{early}")).json()["timestamp"] == "0001-01-01T00:00:00Z"


async def test_an_out_of_range_timestamp_refuses_only_its_batch_item(api: Api) -> None:
    events: list[dict[str, Any]] = [{"type": "GOOD", "payload": {"n": i}} for i in range(1000)]
    events[500]["timestamp"] = EDGE_TIMESTAMPS[0]
    events[900]["timestamp"] = EDGE_TIMESTAMPS[1]
    r = await api.client.post("/events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (998, 0, 2)
    for i in (500, 900):
        assert body["results"][i]["status"] == 422
        assert "timestamp" in body["results"][i]["error"]
    assert await api.stream_len() == 998


# --- Idempotency-Key on a batch -----------------------------------------------------


async def test_a_batch_sent_twice_with_one_idempotency_key_is_enqueued_once(api: Api) -> None:
    events = [{"type": "T", "payload": {"n": i}} for i in range(3)]
    headers = {"Idempotency-Key": "nightly-2026-12-06"}
    first = await api.client.post("/events/batch", json={"events": events}, headers=headers)
    again = await api.client.post("/events/batch", json={"events": events}, headers=headers)

    assert first.status_code == again.status_code == 200, (first.text, again.text)
    a, b = first.json(), again.json()
    assert (a["accepted"], a["duplicates"]) == (3, 0)
    assert (b["accepted"], b["duplicates"]) == (0, 3)
    assert [x["eventId"] for x in b["results"]] == [x["eventId"] for x in a["results"]]
    assert all(x["status"] == 200 and x["duplicate"] for x in b["results"])
    assert await api.stream_len() == 3
    # each item's key is the header's and its position: a lone retry of one item matches it
    got = (await api.client.get(f"/events/{a['results'][1]['eventId']}")).json()
    assert got["idempotencyKey"] == "nightly-2026-12-06:1"
    r = await api.post("T", {"n": 1}, headers={"Idempotency-Key": "nightly-2026-12-06:1"})
    assert (r.status_code, r.json()["eventId"]) == (200, a["results"][1]["eventId"])


async def test_a_batch_retried_after_fixing_one_item_enqueues_only_that_item(api: Api) -> None:
    events: list[dict[str, Any]] = [{"type": "T", "payload": {"n": i}} for i in range(3)]
    events[2]["type"] = "bad type"
    headers = {"Idempotency-Key": "b-1"}
    first = (await api.client.post("/events/batch", json={"events": events}, headers=headers)).json()
    assert [x["status"] for x in first["results"]] == [202, 202, 422]
    events[2]["type"] = "T"
    again = (await api.client.post("/events/batch", json={"events": events}, headers=headers)).json()
    assert [x["status"] for x in again["results"]] == [200, 200, 202]
    assert await api.stream_len() == 3


async def test_a_batch_items_own_id_wins_over_the_header(api: Api) -> None:
    events = [{"type": "T", "payload": {}, "id": "own-id"}, {"type": "T", "payload": {}}]
    r = await api.client.post("/events/batch", json={"events": events}, headers={"Idempotency-Key": "h"})
    ids = [x["eventId"] for x in r.json()["results"]]
    keys = [(await api.client.get(f"/events/{i}")).json()["idempotencyKey"] for i in ids]
    assert keys == ["own-id", "h:1"]


async def test_a_batch_idempotency_key_too_long_to_derive_item_keys_is_422(api: Api) -> None:
    events = [{"type": "T", "payload": {}}]
    r = await api.client.post(
        "/events/batch", json={"events": events}, headers={"Idempotency-Key": "k" * 256}
    )
    assert_problem(r, 422, "Idempotency-Key", "batch")
    assert await api.stream_len() == 0


# --- a reused idempotency key with another body -------------------------------------


async def test_reusing_an_idempotency_key_with_another_body_is_422(api: Api) -> None:
    key = {"Idempotency-Key": "order-1042"}
    first = await api.accepted("PAYMENT", {"amount": 10}, headers=key)
    assert_problem(
        await api.post("PAYMENT", {"amount": 99}, headers=key), 422, "Idempotency-Key", "different"
    )
    assert_problem(await api.post("REFUND", {"amount": 10}, headers=key), 422, "different")
    same = await api.post("PAYMENT", {"amount": 10}, headers=key)
    assert (same.status_code, same.json()["eventId"], same.json()["duplicate"]) == (200, first, True)
    assert await api.stream_len() == 1
    assert (await api.counters()).get("duplicates") == 1


async def test_the_same_event_written_differently_is_still_a_duplicate(api: Api) -> None:
    first = await api.client.post(
        "/events",
        content=b'{"type":"T","payload":{"a":1,"b":[1,2]},"timestamp":"2026-01-01T01:00:00+01:00","id":"x"}',
    )
    assert first.status_code == 202, first.text
    again = await api.client.post(
        "/events",
        content=b'{ "id": "x", "payload": {"b": [1, 2], "a": 1}, "timestamp": "2026-01-01T00:00:00Z",'
        b' "type": "T" }',
    )
    assert (again.status_code, again.json()["eventId"]) == (200, first.json()["eventId"])


async def test_reusing_a_body_id_with_another_body_is_422(api: Api) -> None:
    await api.accepted("T", {"v": 1}, id="evt-1")
    assert_problem(await api.post("T", {"v": 2}, id="evt-1"), 422, "different")
    events = [
        {"type": "T", "payload": {"v": 1}, "id": "evt-1"},
        {"type": "T", "payload": {"v": 3}, "id": "evt-1"},
    ]
    body = (await api.client.post("/events/batch", json={"events": events})).json()
    assert [x["status"] for x in body["results"]] == [200, 422]
    assert "different" in body["results"][1]["error"]
    assert await api.stream_len() == 1


# --- malformed JSON that decoders disagree on ----------------------------------------


async def test_a_lone_surrogate_escape_is_422_saying_so(api: Api) -> None:
    r = await api.client.post("/events", content=b'{"type":"T","payload":{"x":"\\ud800"}}')
    body = assert_problem(r, 422, "surrogate")
    assert "truncated" not in body["detail"]
    r = await api.client.post("/events/batch", content=b'{"events":[{"type":"T","payload":{"\\ud800":1}}]}')
    assert_problem(r, 422, "surrogate")
    assert await api.stream_len() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"OK","type":"FAIL","payload":{}}',
        b'{"type":"OK","payload":{"a":1},"payload":{"a":2}}',
        b'{"type":"OK","payload":{"a":{"b":1,"b":2}}}',
        b'{"type":"OK","payload":{"a":1,"\\u0061":2}}',
        b'{"type":"OK","payload":{"list":[{"k":1},{"k":1,"k":2}]}}',
    ],
)
async def test_duplicate_keys_in_an_object_are_422(api: Api, raw: bytes) -> None:
    assert_problem(await api.client.post("/events", content=raw), 422, "duplicate key")
    assert await api.stream_len() == 0


async def test_duplicate_keys_refuse_only_their_batch_item(api: Api) -> None:
    raw = (
        b'{"events":[{"type":"OK","payload":{}},{"type":"OK","type":"FAIL","payload":{}},'
        b'{"type":"OK","payload":{}}]}'
    )
    r = await api.client.post("/events/batch", content=raw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["status"] for x in body["results"]] == [202, 422, 202]
    assert "duplicate key" in body["results"][1]["error"]
    await api.burst(default_app())
    rows, _ = await api.store.list(10)
    assert sorted(row.type for row in rows) == ["OK", "OK"]


@pytest.mark.parametrize("second", [b'"events"', b'"\\u0065vents"'])
async def test_a_batch_with_two_events_lists_is_422(api: Api, second: bytes) -> None:
    raw = b'{"events":[{"type":"A","payload":{}}],' + second + b':[{"type":"B","payload":{}}]}'
    assert_problem(await api.client.post("/events/batch", content=raw), 422, "duplicate key")
    assert await api.stream_len() == 0


async def test_repeated_strings_that_are_not_keys_are_fine(api: Api) -> None:
    raw = b'{"type":"T","payload":{"a":"a","b":"a:","c":["c","c"],"d":{"a":"\\"a\\":"}},"source":null}'
    r = await api.client.post("/events", content=raw)
    assert r.status_code == 202, r.text
