"""POST /replay (processed events as new ones) and the filtered, paced POST /failed-events/replay."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from eventstream.auth.trail import LOGGER
from eventstream.event import Event
from eventstream.replay.engine import Pacer
from tests.support.asgi import Api, MakeApi, assert_problem, processed
from tests.support.factories import recording_app


async def test_replay_by_type_makes_new_events_that_point_to_the_originals(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await processed(api, "A", "B", "A")
    r = await api.client.post("/replay?type=A")
    assert r.status_code == 202, r.text
    assert r.json() == {"replayed": 2, "nextCursor": None, "duplicates": 0}
    summary = await api.summary()
    assert (summary["received"], summary["queued"]) == (5, 2)  # counted like any accepted event
    seen: list[Event] = []
    await api.burst(recording_app(seen))
    assert sorted(e.replay_of or "" for e in seen) == sorted([ids[0], ids[2]])
    assert all(e.id not in ids and e.type == "A" and e.attempt == 1 for e in seen)
    got = (await api.client.get(f"/events/{seen[0].id}")).json()
    assert (got["status"], got["replayOf"], got["idempotencyKey"]) == ("processed", seen[0].replay_of, None)
    after = await api.summary()
    assert (after["received"], after["processed"]) == (5, 5)
    assert await api.store.count() == 5


async def test_replay_by_ids_collapses_repeats_and_names_the_unknown(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    a, b = await processed(api, "A", "B")
    r = await api.client.post(f"/replay?id={a}&id={a}&id=nope")
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["replayed"], body["notFound"]) == (1, ["nope"])
    assert [e["replayOf"] for e in body["events"]] == [a]
    # a filter still applies to listed ids
    assert (await api.client.post(f"/replay?id={b}&type=A")).json()["replayed"] == 0


async def test_the_same_request_key_replays_nothing_twice(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    [a] = await processed(api, "A")
    first = (await api.client.post(f"/replay?id={a}", headers={"Idempotency-Key": "k1"})).json()
    again = (await api.client.post(f"/replay?id={a}", headers={"Idempotency-Key": "k1"})).json()
    assert (first["replayed"], again["replayed"], again["duplicates"]) == (1, 0, 1)
    assert again["events"] == first["events"]
    # the original's own idempotency key is untouched: a post with it is not a duplicate of a replay
    assert (await api.post("A", {}, headers={"Idempotency-Key": "k1"})).status_code == 202


async def test_dry_run_counts_and_enqueues_nothing(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await processed(api, "A", "A", "B")
    r = await api.client.post("/replay?type=A&dry_run=true")
    assert r.status_code == 200, r.text
    assert r.json() == {"dryRun": True, "matched": 2, "sample": ids[:2], "notFound": []}
    assert (await api.summary())["received"] == 3
    assert await api.stream_len() == 0


async def test_paging_with_a_cursor_never_picks_up_the_replays(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await processed(api, *["A"] * 5)
    cursor = None
    for _ in range(10):
        url = "/replay?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await api.client.post(url)).json()
        await api.burst(recording_app([]))  # the replays are processed between pages
        cursor = body["nextCursor"]
        if cursor is None:
            break
    rows, _ = await api.store.list(100)
    assert sorted(r.replay_of for r in rows if r.replay_of) == sorted(ids)  # each original once


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("since=2026-01-01T00:00:00", "time zone"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "before until"),
        ("cursor=abc", "cursor"),
        ("rate=0", "rate"),
        ("limit=0", "limit"),
        ("type=a%20b", "type"),
        ("id=" + "x" * 65, "id"),
    ],
)
async def test_bad_replay_requests_are_422(api: Api, query: str, word: str) -> None:
    assert_problem(await api.client.post(f"/replay?{query}"), 422, word)
    assert_problem(await api.client.post(f"/failed-events/replay?{query}"), 422, word)


async def test_dlq_replay_by_ids_type_and_dry_run_keeps_the_ids(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = [await api.accepted(t, {}) for t in ("A", "B", "A", "B")]
    await api.burst(recording_app([], dead=frozenset({"A", "B"})))
    preview = (await api.client.post("/failed-events/replay?type=B&dry_run=true")).json()
    assert (preview["matched"], preview["sample"]) == (2, [ids[1], ids[3]])
    assert (await api.summary())["dlq"] == 4
    r = await api.client.post(f"/failed-events/replay?id={ids[0]}&id=gone")
    assert r.json() == {"replayed": 1, "nextCursor": None, "notFound": ["gone"]}
    assert (await api.client.get(f"/events/{ids[0]}")).json()["status"] == "queued"  # same id
    assert (await api.client.post("/failed-events/replay?type=B&until=2000-01-01T00:00:00Z")).json()[
        "replayed"
    ] == 0
    first = (await api.client.post("/failed-events/replay?type=B&limit=1")).json()
    assert first["replayed"] == 1
    assert first["nextCursor"]
    rest = (await api.client.post(f"/failed-events/replay?type=B&cursor={first['nextCursor']}")).json()
    assert rest == {"replayed": 1, "nextCursor": None}
    summary = await api.summary()
    assert (summary["dlq"], summary["queued"], summary["received"]) == (1, 3, 4)


async def test_pacer_waits_before_a_chunk_never_after_the_last() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(100, clock=lambda: now[0], sleep=sleep)
    assert pacer.chunk == 10
    assert pacer.budget(1_000_000) == 1000  # 10 s at 100/s
    for _ in range(3):
        await pacer.ready()
        pacer.went(10)
    assert slept == pytest.approx([0.1, 0.1])  # the first chunk goes at once
    now[0] += 5  # a slow send: no sleep until the schedule is caught up
    await pacer.ready()
    assert len(slept) == 2
    assert Pacer(0.5).chunk == 1


async def test_each_replay_call_is_audited_with_its_selection_and_its_count(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    await processed(api, "A", "B", "A")
    dead = await api.accepted("D", {})
    await api.burst(recording_app([], dead=frozenset({"D"})))
    with capture_logs() as logs:
        assert (await api.client.post("/replay?type=A&dry_run=true")).status_code == 200  # not audited
        assert (await api.client.post("/replay?type=A")).status_code == 202
        assert (await api.client.post(f"/failed-events/replay?id={dead}")).status_code == 202
    records = [r for r in logs if r.get("logger") == LOGGER and r["action"].startswith("replay.")]
    assert [(r["action"], r["target"], r["replayed"], r["key_name"], r["via"]) for r in records] == [
        ("replay.history", "type=A", 2, "anonymous", "http"),
        ("replay.dlq", "ids=1", 1, "anonymous", "http"),
    ]
    assert records[0]["duplicates"] == 0


async def test_a_replay_keeps_the_ordering_key_and_joins_its_line(store_api: MakeApi) -> None:
    api = await store_api(replay_rate=100_000)
    first = await api.accepted("A", {"n": 1}, orderingKey="acct-1")
    second = await api.accepted("A", {"n": 2}, orderingKey="acct-1")
    plain = await api.accepted("A", {"n": 3})
    await api.burst(recording_app([]))
    live = await api.accepted("A", {"n": 4}, orderingKey="acct-1")  # the key is busy again

    body = (await api.client.post(f"/replay?id={first}&id={second}&id={plain}")).json()
    assert body["replayed"] == 3
    made = {e["replayOf"]: e["id"] for e in body["events"]}
    replays = [(await api.client.get(f"/events/{made[i]}")).json() for i in (first, second, plain)]
    assert [(r["orderingKey"], "parkedAt" in r) for r in replays] == [
        ("acct-1", True),  # behind the live event of its key
        ("acct-1", True),
        (None, False),
    ]

    seen: list[Event] = []
    await api.burst(recording_app(seen))
    assert [e.id for e in seen if e.ordering_key == "acct-1"] == [live, made[first], made[second]]
    rows = await api.store.get_many([made[first], made[second], made[plain]])
    assert [rows[made[i]].ordering_key for i in (first, second, plain)] == ["acct-1", "acct-1", None]
