"""The DLQ over HTTP: GET /failed-events[/{id}], replay one / all / by type, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.support.asgi import Api, assert_problem, kill
from tests.support.factories import failing_app

ITEM_KEYS = {"id", "type", "payload", "reason", "attempts", "failedAt"}


async def page_all(api: Api, query: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    cursors: list[tuple[int, int]] = []
    for _ in range(100):
        url = f"/failed-events?limit={limit}" + (f"&{query}" if query else "")
        if cursor is not None:
            url += f"&cursor={cursor}"
        r = await api.client.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "nextCursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["nextCursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == limit
        ms, seq = cursor.split("-")
        cursors.append((int(ms), int(seq)))
        assert cursors == sorted(cursors, reverse=True)  # newest first: entry ids go down
        assert len(set(cursors)) == len(cursors)
    raise AssertionError("paging did not end")


async def test_failed_events_newest_first_with_paging(api: Api) -> None:
    assert (await api.client.get("/failed-events")).json() == {"items": [], "nextCursor": None}
    ids = await kill(api, [("PERM", {"n": i}) for i in range(5)])
    for limit in (1, 2, 5, 6):
        items = await page_all(api, "", limit)
        assert sorted(x["id"] for x in items) == sorted(ids)
        assert len(items) == 5
    items = await page_all(api, "", 2)
    for x in items:
        assert set(x) >= ITEM_KEYS
        assert x["type"] == "PERM"
        assert x["attempts"] == 1
        assert "cannot handle PERM" in x["reason"]
        assert x["status"] == "dead"
    failed_at = [datetime.fromisoformat(x["failedAt"].replace("Z", "+00:00")) for x in items]
    assert failed_at == sorted(failed_at, reverse=True)
    # newest first: the DLQ entries were added in the order the worker settled them
    by_id = {x["id"]: x for x in items}
    assert {by_id[i]["payload"]["n"] for i in ids} == set(range(5))


async def test_newer_dead_event_comes_first(api: Api) -> None:
    [older] = await kill(api, [("PERM", {"n": 0})])
    [newer] = await kill(api, [("OTHER", {"n": 1})])
    items = (await api.client.get("/failed-events")).json()["items"]
    assert [x["id"] for x in items] == [newer, older]
    assert [x["id"] for x in await page_all(api, "", 1)] == [newer, older]


async def test_type_filter_with_paging(api: Api) -> None:
    ids = await kill(api, [("PERM", {"n": 0}), ("OTHER", {"n": 1}), ("PERM", {"n": 2}), ("OTHER", {"n": 3})])
    items = await page_all(api, "type=OTHER", 1)
    assert sorted(x["id"] for x in items) == sorted([ids[1], ids[3]])
    assert {x["type"] for x in items} == {"OTHER"}
    assert await page_all(api, "type=NONE", 3) == []


async def test_failed_event_detail_and_404(api: Api) -> None:
    [event_id] = await kill(api, [("FLAKY", {"n": 7})])
    r = await api.client.get(f"/failed-events/{event_id}")
    assert r.status_code == 200
    item = r.json()
    assert item["id"] == event_id
    assert item["type"] == "FLAKY"
    assert item["payload"] == {"n": 7}
    assert item["attempts"] == 2
    assert "flaky failure 7" in item["reason"]
    assert "2 attempts" in item["reason"]
    assert "RuntimeError" in item["traceback"]  # the handler's, kept for the operator
    assert datetime.fromisoformat(item["firstFailedAt"].replace("Z", "+00:00")) <= datetime.fromisoformat(
        item["failedAt"].replace("Z", "+00:00")
    )
    [listed] = (await api.client.get("/failed-events")).json()["items"]
    assert listed == item

    assert_problem(await api.client.get("/failed-events/unknown"), 404, "unknown")
    # a live (queued) event is not in the DLQ
    queued = await api.accepted("PERM", {})
    assert_problem(await api.client.get(f"/failed-events/{queued}"), 404)


async def test_replay_one_sends_the_same_event_back_with_attempts_afresh(api: Api) -> None:
    [event_id] = await kill(api, [("FLAKY", {"n": 1})])
    before = await api.summary()
    assert (before["dlq"], before["deadLettered"], before["failed"], before["retried"]) == (1, 1, 2, 1)

    r = await api.client.post(f"/failed-events/{event_id}/replay")
    assert r.status_code == 202, r.text
    assert r.json() == {"replayed": 1, "eventId": event_id}

    got = (await api.client.get(f"/events/{event_id}")).json()
    assert (got["status"], got["attempts"]) == ("queued", 0)
    assert_problem(await api.client.get(f"/failed-events/{event_id}"), 404)
    summary = await api.summary()
    assert (summary["dlq"], summary["queued"], summary["replayed"]) == (0, 1, 1)
    assert summary["received"] == 1  # a replay is not a new acceptance
    assert await api.stream_len() == 1

    seen: list[tuple[str, int]] = []
    await api.burst(failing_app(broken=set(), seen=seen))
    assert seen == [(event_id, 1)]
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert (got["status"], got["attempts"], got["payload"]) == ("processed", 1, {"n": 1})
    after = await api.summary()
    assert (after["processed"], after["dlq"], after["queued"]) == (1, 0, 0)
    assert await api.store.count() == 1


async def test_replay_one_that_fails_again_goes_back_to_the_dlq(api: Api) -> None:
    [event_id] = await kill(api, [("FLAKY", {"n": 1})])
    assert (await api.client.post(f"/failed-events/{event_id}/replay")).status_code == 202
    seen: list[tuple[str, int]] = []
    await api.burst(failing_app(seen=seen))
    assert seen == [(event_id, 1), (event_id, 2)]  # the full allowance again
    item = (await api.client.get(f"/failed-events/{event_id}")).json()
    assert item["attempts"] == 2
    assert (await api.summary())["deadLettered"] == 2


async def test_replay_all_and_by_type(api: Api) -> None:
    ids = await kill(api, [("PERM", {"n": 0}), ("OTHER", {"n": 1}), ("OTHER", {"n": 2}), ("PERM", {"n": 3})])

    r = await api.client.post("/failed-events/replay?type=OTHER")
    assert r.status_code == 202
    assert r.json() == {"replayed": 2, "nextCursor": None}
    left = await page_all(api, "", 10)
    assert sorted(x["id"] for x in left) == sorted([ids[0], ids[3]])
    for i in (1, 2):
        assert (await api.client.get(f"/events/{ids[i]}")).json()["status"] == "queued"
    assert await api.stream_len() == 2

    r = await api.client.post("/failed-events/replay")
    assert r.json() == {"replayed": 2, "nextCursor": None}
    assert await page_all(api, "", 10) == []
    assert await api.stream_len() == 4
    assert (await api.client.post("/failed-events/replay")).json() == {"replayed": 0, "nextCursor": None}
    assert (await api.client.post("/failed-events/replay?type=PERM")).json() == {
        "replayed": 0,
        "nextCursor": None,
    }

    await api.burst(failing_app(broken=set()))
    rows, _ = await api.store.list(10)
    assert sorted(r.id for r in rows) == sorted(ids)
    assert (await api.summary())["replayed"] == 4


async def test_replay_all_pages_through_a_large_dlq(api: Api) -> None:
    r = await api.client.post(
        "/events/batch", json={"events": [{"type": "PERM", "payload": {"n": i}} for i in range(620)]}
    )
    assert r.json()["accepted"] == 620
    await api.burst(failing_app())
    assert (await api.summary())["dlq"] == 620
    r = await api.client.post("/failed-events/replay?type=PERM")
    assert r.json() == {"replayed": 620, "nextCursor": None}
    summary = await api.summary()
    assert (summary["dlq"], summary["queued"]) == (0, 620)


async def test_delete_then_404(api: Api) -> None:
    keep, gone = await kill(api, [("PERM", {"n": 0}), ("PERM", {"n": 1})])
    r = await api.client.delete(f"/failed-events/{gone}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(await api.client.get(f"/failed-events/{gone}"), 404)
    assert_problem(await api.client.get(f"/events/{gone}"), 404)
    assert_problem(await api.client.delete(f"/failed-events/{gone}"), 404)
    assert_problem(await api.client.post(f"/failed-events/{gone}/replay"), 404)
    assert [x["id"] for x in (await api.client.get("/failed-events")).json()["items"]] == [keep]
    summary = await api.summary()
    assert (summary["dlq"], summary["deleted"]) == (1, 1)


async def test_replay_or_delete_of_a_live_event_is_404(api: Api) -> None:
    queued = await api.accepted("PERM", {})
    assert_problem(await api.client.post(f"/failed-events/{queued}/replay"), 404)
    assert_problem(await api.client.delete(f"/failed-events/{queued}"), 404)
    assert (await api.client.get(f"/events/{queued}")).json()["status"] == "queued"
    assert await api.stream_len() == 1


@pytest.mark.parametrize("event_id", ["unknown", "x" * 100])
async def test_replay_and_delete_of_unknown_are_404(api: Api, event_id: str) -> None:
    assert_problem(await api.client.post(f"/failed-events/{event_id}/replay"), 404, "not found")
    assert_problem(await api.client.delete(f"/failed-events/{event_id}"), 404, "not found")
    assert_problem(await api.client.get(f"/failed-events/{event_id}"), 404, "not found")


BAD_QUERIES = [
    "cursor=abc",
    "cursor=1-2-3",
    "cursor=-1-0",
    "cursor=99999999999999999999-0",  # matches the shape, but is past a stream id's range
    "cursor=1-18446744073709551616",
    "limit=0",
    "limit=1001",
    "type=a%20b",
]


@pytest.mark.parametrize("query", BAD_QUERIES)
async def test_bad_query_is_422(api: Api, query: str) -> None:
    await kill(api, [("PERM", {})])
    assert_problem(await api.client.get(f"/failed-events?{query}"), 422)


async def test_cursor_at_the_ends_of_the_id_range(api: Api) -> None:
    [event_id] = await kill(api, [("PERM", {})])
    r = await api.client.get("/failed-events?cursor=0-0")
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "nextCursor": None}
    r = await api.client.get("/failed-events?cursor=18446744073709551615-18446744073709551615")
    assert [x["id"] for x in r.json()["items"]] == [event_id]


async def test_replay_by_bad_type_is_422(api: Api) -> None:
    assert_problem(await api.client.post("/failed-events/replay?type=a%20b"), 422, "type")
