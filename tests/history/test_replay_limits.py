"""Replay's limits hold on both stores: long request keys fit, cursors are checked, the
rate cap and the per-call budget apply to filters and ids alike, and pacing never waits
after the last chunk of a call."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as SettingsError

from eventstream.event import Event
from eventstream.replay import dead as dlq
from eventstream.replay import engine as replay
from eventstream.replay import history
from eventstream.replay.engine import Pacer, Selection, encode_token
from eventstream.settings import Settings
from tests.support.asgi import Api, MakeApi, assert_problem, processed
from tests.support.factories import recording_app, row

NEW_YEAR_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000


class FakeTime:
    """A clock and a sleep that only move each other: counts the pacer's waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


async def test_a_replay_under_a_256_character_request_key_is_processed(store_api: MakeApi) -> None:
    api = await store_api(replay_rate=100_000)
    [a] = await processed(api, "A")
    key = "k" * 256  # the longest Idempotency-Key a request may carry
    first = await api.client.post(f"/replay?id={a}", headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    [made] = first.json()["events"]
    seen: list[Event] = []
    await api.burst(recording_app(seen))  # the store takes the replay's key: the worker goes on
    assert [(e.id, e.replay_of) for e in seen] == [(made["id"], a)]
    stored = await api.store.get(made["id"])
    assert stored is not None
    assert stored.idempotency_key == history.replay_key(key, a)
    assert len(stored.idempotency_key) <= 77
    summary = await api.summary()
    assert (summary["processed"], summary["queued"], summary["pending"]) == (2, 0, 0)
    again = (await api.client.post(f"/replay?id={a}", headers={"Idempotency-Key": key})).json()
    assert (again["replayed"], again["duplicates"], again["events"]) == (0, 1, [made])


@pytest.mark.parametrize(
    "parts",
    [
        [2**63, "x", NEW_YEAR_MS],  # past a BIGINT
        [NEW_YEAR_MS, "x", -(2**63) - 1],
        [NEW_YEAR_MS, "a\x00b", NEW_YEAR_MS],  # PostgreSQL refuses NUL in a query
        [NEW_YEAR_MS, "x"],
        [3],  # a cursor of a replay by ids
    ],
)
async def test_a_tampered_history_cursor_is_422(store_api: MakeApi, parts: list[object]) -> None:
    api = await store_api(replay_rate=100_000)
    await processed(api, "A")
    r = await api.client.post("/replay", params={"cursor": encode_token(parts)})
    assert_problem(r, 422, "cursor")


async def test_an_ids_cursor_must_fit_the_ids_it_is_sent_with(store_api: MakeApi) -> None:
    api = await store_api(replay_rate=100_000)
    a, b = await processed(api, "A", "A")
    for path in ("/replay", "/failed-events/replay"):
        for cursor in (encode_token([2]), encode_token([0]), encode_token([1, "x", 1])):
            r = await api.client.post(path, params={"id": [a, b], "cursor": cursor})
            assert_problem(r, 422, "cursor")


async def test_since_and_until_choose_what_history_replays(store_api: MakeApi) -> None:
    api = await store_api(replay_rate=100_000)
    await api.store.record([row(f"h{i}", NEW_YEAR_MS + i * HOUR_MS, "A") for i in range(4)])
    await api.store.record([row("other", NEW_YEAR_MS + HOUR_MS, "B")])
    window = {"since": "2026-01-01T01:00:00Z", "until": "2026-01-01T03:00:00Z"}
    preview = (await api.client.post("/replay", params={**window, "type": "A", "dry_run": "true"})).json()
    assert (preview["matched"], preview["sample"]) == (2, ["h1", "h2"])  # since inclusive, until not
    r = await api.client.post("/replay", params={**window, "type": "A"})
    assert r.json() == {"replayed": 2, "nextCursor": None, "duplicates": 0}
    seen: list[Event] = []
    await api.burst(recording_app(seen))
    assert sorted(e.replay_of or "" for e in seen) == ["h1", "h2"]
    assert (await api.client.post("/replay", params=window)).json()["replayed"] == 3  # B too


async def test_the_configured_rate_caps_a_request_and_bounds_each_call(make_api: MakeApi) -> None:
    # at 0.1 events/s a call's 10 s are worth one event: asking for 50/s does not lift that
    api = await make_api(replay_rate=0.1)
    await processed(api, "A", "A", "A")
    replayed, calls, cursor = 0, 0, None
    while True:
        body = (await api.client.post("/replay", params={"rate": 50, "cursor": cursor})).json()
        assert body["replayed"] <= 1, body  # the last call may find nothing left
        replayed, calls, cursor = replayed + body["replayed"], calls + 1, body["nextCursor"]
        if cursor is None:
            break
        assert calls < 5, "the replay does not end"
    assert replayed == 3
    assert (await api.summary())["queued"] == 3


async def test_a_replay_by_ids_keeps_to_the_budget_and_resumes_with_the_cursor(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=0.1)
    a, b, c = await processed(api, "A", "A", "A")
    ids = [a, "nope", b, a, c]  # a repeat counts once; an unknown id is named on its page
    pages = []
    cursor = None
    for _ in range(5):
        body = (await api.client.post("/replay", params={"id": ids, "cursor": cursor})).json()
        pages.append(body)
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert [p["replayed"] for p in pages] == [1, 1, 1]
    assert [e["replayOf"] for p in pages for e in p["events"]] == [a, b, c]
    assert [p.get("notFound", []) for p in pages] == [[], ["nope"], []]


async def test_a_dlq_replay_by_ids_keeps_to_the_budget_too(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=0.1)
    ids = [await api.accepted("D", {}) for _ in range(2)]
    await api.burst(recording_app([], dead=frozenset({"D"})))
    first = (await api.client.post("/failed-events/replay", params={"id": ids})).json()
    assert first["replayed"] == 1
    assert first["nextCursor"]
    rest = (
        await api.client.post("/failed-events/replay", params={"id": ids, "cursor": first["nextCursor"]})
    ).json()
    assert rest == {"replayed": 1, "nextCursor": None}
    summary = await api.summary()
    assert (summary["dlq"], summary["queued"]) == (0, 2)


async def test_a_call_never_waits_after_its_last_chunk(make_api: MakeApi) -> None:
    api = await make_api()
    await processed(api, "A", "A", "A")
    filtered = FakeTime()
    page = await history.replay_history(
        api.broker, api.store, Selection(type="A"), rate=10, dedupe_window_ms=60_000,
        pacer=Pacer(10, clock=filtered.clock, sleep=filtered.sleep),
    )  # fmt: skip
    assert page.replayed == 3
    assert filtered.slept == pytest.approx([0.1, 0.1])  # between the three chunks of one, not after
    by_ids = FakeTime()
    ids = tuple(r.id for r in await api.store.scan(3, None, "A"))
    page = await history.replay_history(
        api.broker, api.store, Selection(ids=ids), rate=10, dedupe_window_ms=60_000,
        pacer=Pacer(10, clock=by_ids.clock, sleep=by_ids.sleep),
    )  # fmt: skip
    assert (page.replayed, len(by_ids.slept)) == (3, 2)
    await api.burst(recording_app([], dead=frozenset({"A"})))
    dead = FakeTime()
    page = await dlq.replay_matching(
        api.broker, Selection(), rate=10, pacer=Pacer(10, clock=dead.clock, sleep=dead.sleep)
    )
    assert (page.replayed, len(dead.slept)) == (6, 5)  # the six replays above, all dead


@pytest.mark.parametrize("path", ["/replay", "/failed-events/replay"])
async def test_a_rate_below_the_minimum_is_422(api: Api, path: str) -> None:
    assert_problem(await api.client.post(path, params={"rate": 0.05}), 422, "rate")


def test_the_configured_rate_has_the_same_minimum() -> None:
    with pytest.raises(SettingsError, match="replay_rate"):
        Settings(replay_rate=0.05)
    assert Settings(replay_rate=replay.MIN_RATE).replay_rate == 0.1
