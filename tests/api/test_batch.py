"""POST /events/batch: one result per item, in order; bad items do not sink good ones."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream.app import default_app
from tests.support.asgi import Api, MakeApi, assert_problem


async def test_results_come_back_in_order(api: Api) -> None:
    events = [{"type": f"T{i}", "payload": {"i": i}} for i in range(5)]
    r = await api.client.post("/events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 5
    assert body["duplicates"] == 0
    assert body["rejected"] == 0
    results = body["results"]
    assert [x["index"] for x in results] == list(range(5))
    assert all(x["status"] == 202 and x["duplicate"] is False for x in results)
    assert len({x["eventId"] for x in results}) == 5
    for i, x in enumerate(results):
        got = (await api.client.get(f"/events/{x['eventId']}")).json()
        assert (got["type"], got["payload"], got["status"]) == (f"T{i}", {"i": i}, "queued")
    assert await api.stream_len() == 5
    assert (await api.counters())["received"] == 5

    await api.burst(default_app())
    processed = {row.id: row.type for row in (await api.store.list(10))[0]}
    assert processed == {x["eventId"]: f"T{i}" for i, x in enumerate(results)}


async def test_bad_items_do_not_sink_good_ones(api: Api) -> None:
    events: list[Any] = [
        {"type": "GOOD", "payload": {"n": 0}},
        {"payload": {}},  # no type
        {"type": "GOOD", "payload": {"n": 2}},
        5,
        {"type": "bad type", "payload": {}},
        {"type": "GOOD", "payload": [1]},
        {"type": "GOOD", "payload": {}, "extra": 1},
        {"type": "GOOD", "payload": {"n": 7}},
    ]
    r = await api.client.post("/events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 5)
    results = body["results"]
    assert [x["index"] for x in results] == list(range(8))
    assert [x["status"] for x in results] == [202, 422, 202, 422, 422, 422, 422, 202]
    assert "type" in results[1]["error"]
    assert "object" in results[3]["error"]
    assert "type" in results[4]["error"]
    assert "payload" in results[5]["error"]
    assert "extra" in results[6]["error"]
    # what is wrong, by location, as a single POST's 422 says it
    assert [e["loc"] for e in results[4]["errors"]] == ["$.type"]
    assert [e["loc"] for e in results[5]["errors"]] == ["$.payload"]
    for x in results:
        if x["status"] == 422:
            assert "eventId" not in x
    payloads = [
        (await api.client.get(f"/events/{results[i]['eventId']}")).json()["payload"] for i in (0, 2, 7)
    ]
    assert payloads == [{"n": 0}, {"n": 2}, {"n": 7}]
    assert await api.stream_len() == 3
    assert (await api.counters())["received"] == 3


async def test_batch_of_only_bad_items_enqueues_nothing(api: Api) -> None:
    r = await api.client.post("/events/batch", json={"events": [{"type": "T"}, {"payload": {}}]})
    assert r.status_code == 200
    assert r.json()["rejected"] == 2
    assert r.json()["accepted"] == 0
    assert await api.stream_len() == 0


async def test_duplicates_inside_a_batch(api: Api) -> None:
    events = [
        {"type": "T", "payload": {"v": 1}, "id": "k1"},
        {"type": "T", "payload": {"v": 1}, "id": "k1"},
        {"type": "T", "payload": {"v": 3}, "id": "k2"},
        {"type": "T", "payload": {"v": 4}},
        {"type": "T", "payload": {"v": 3}, "id": "k2"},
    ]
    r = await api.client.post("/events/batch", json={"events": events})
    assert r.status_code == 200
    body = r.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 2, 0)
    res = body["results"]
    assert [x["status"] for x in res] == [202, 200, 202, 202, 200]
    assert [x["duplicate"] for x in res] == [False, True, False, False, True]
    assert res[1]["eventId"] == res[0]["eventId"]
    assert res[4]["eventId"] == res[2]["eventId"]
    assert len({res[0]["eventId"], res[2]["eventId"], res[3]["eventId"]}) == 3
    assert await api.stream_len() == 3
    counters = await api.counters()
    assert (counters["received"], counters["duplicates"]) == (3, 2)
    # the first item with a key is the one kept
    assert (await api.client.get(f"/events/{res[0]['eventId']}")).json()["payload"] == {"v": 1}


async def test_batch_item_duplicate_of_an_earlier_post(api: Api) -> None:
    first = await api.post("T", {}, id="earlier")
    r = await api.client.post(
        "/events/batch", json={"events": [{"type": "T", "payload": {}, "id": "earlier"}]}
    )
    [item] = r.json()["results"]
    assert item == {"index": 0, "status": 200, "eventId": first.json()["eventId"], "duplicate": True}
    assert await api.stream_len() == 1


async def test_item_nested_past_max_depth_is_rejected_alone(make_api: MakeApi) -> None:
    api = await make_api(max_depth=2)
    events = [{"type": "T", "payload": {"a": {"b": {}}}}, {"type": "T", "payload": {"a": {}}}]
    r = await api.client.post("/events/batch", json={"events": events})
    assert [x["status"] for x in r.json()["results"]] == [422, 202]
    assert "payload" in r.json()["results"][0]["error"]


async def test_item_that_is_not_utf8_is_rejected_alone(api: Api) -> None:
    body = b'{"events": [{"type": "T", "payload": {"a": "\xfe"}}, {"type": "T", "payload": {}}]}'
    r = await api.client.post("/events/batch", content=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [422, 202]
    assert "UTF-8" in results[0]["error"]
    assert await api.stream_len() == 1


async def test_batch_over_max_batch_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_batch=3)
    ok = await api.client.post("/events/batch", json={"events": [{"type": "T", "payload": {}}] * 3})
    assert ok.status_code == 200
    assert ok.json()["accepted"] == 3
    r = await api.client.post("/events/batch", json={"events": [{"type": "T", "payload": {}}] * 4})
    assert_problem(r, 413, "4", "3")
    assert await api.stream_len() == 3


async def test_batch_body_over_max_body_bytes_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    events = [{"type": "T", "payload": {"pad": "x" * 500}} for _ in range(5)]
    r = await api.client.post("/events/batch", json={"events": events})
    assert_problem(r, 413, "2048")
    assert await api.stream_len() == 0


BAD_BATCHES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("empty list", b'{"events": []}', ("empty",)),
    ("body is a list", b'[{"type": "T", "payload": {}}]', ("object",)),
    ("body is a string", b'"events"', ("object",)),
    ("events not a list", b'{"events": {"type": "T", "payload": {}}}', ("events",)),
    ("events missing", b"{}", ("events",)),
    ("unknown field", b'{"events": [], "more": 1}', ("more",)),
    ("invalid JSON", b'{"events": [', ("JSON",)),
    ("deep nesting", b'{"events": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", ("nested",)),
    ("empty body", b"", ("empty",)),
]


@pytest.mark.parametrize(
    ("body", "words"), [(b, w) for _, b, w in BAD_BATCHES], ids=[n for n, _, _ in BAD_BATCHES]
)
async def test_body_that_is_not_a_batch_is_422(api: Api, body: bytes, words: tuple[str, ...]) -> None:
    r = await api.client.post("/events/batch", content=body)
    assert_problem(r, 422, *words)
    assert await api.stream_len() == 0
