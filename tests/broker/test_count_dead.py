"""Counting the dead events a filter matches in the server (count_dead.lua through
eventstream.replay.dead.count_matching): the count agrees with the entries the replay
and the dashboard's search take (reason_has, Selection), in whole and in slices that
count on from a cursor, on one server and on the session's Redis Cluster, one
partition and four."""

from __future__ import annotations

import random
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.broker import Broker, DeadEntry, DeadFilter, DeadLetter, Layout
from eventstream.errors import ValidationError
from eventstream.replay import dead
from eventstream.replay.engine import SAMPLE, Selection
from tests.support.broker import make_items

REASONS = [
    "Disk full",
    "disk FULL on /var",
    "timeout talking to smtp",
    "Échec du paiement",  # non-ASCII: É is not folded, é is itself
    "échec du paiement",
    "STRASSE gesperrt",
    "straße gesperrt",  # ß stays ß (no Unicode case folding)
    "K\u212a kelvin sign",  # the Kelvin sign is not an ASCII K
    "",
    "50% done; [brackets] (parens) . * + ? ^ $",  # Lua pattern characters, taken literally
]


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """On one server and on a cluster (overrides the suite's)."""
    return server_or_cluster


@pytest.fixture(params=[1, 4], ids=["one-partition", "four-partitions"])
async def broker(request: pytest.FixtureRequest, redis: Redis, prefix: str) -> Broker:
    b = Broker(redis, Layout(prefix, request.param))
    await b.ensure_group()
    return b


async def bury(broker: Broker, n: int, seed: int = 7) -> list[DeadEntry]:
    """n dead events of types A-C with reasons from REASONS and last failures at 1..n ms
    (chosen at random, reproducibly); the DLQ's entries, oldest first."""
    rnd = random.Random(seed)
    items = make_items(n)
    await broker.enqueue(items, 60_000)
    got: list[Any] = []
    for _ in range(100):
        if len(got) == n:
            break
        got += await broker.read_new("c1", n - len(got), 0 if len(broker.partitions) > 1 else 1)
    assert len(got) == n
    envelopes = {event_id: env for event_id, env, _ in items}
    dead_letters = [
        DeadLetter(g.entry, g.event_id, rnd.choice("ABC"), envelopes[g.event_id], 3,
                   rnd.choice(REASONS), "tb", 1, i + 1, True, g.partition)
        for i, g in enumerate(got)
    ]  # fmt: skip
    _, _, flags = await broker.settle("c1", dead=dead_letters)
    assert all(flags)
    return await broker.scan_dead("-", n + 1)


def expected(entries: list[DeadEntry], sel: Selection, text: str | None) -> list[DeadEntry]:
    source = dead.DeadSource(Broker.__new__(Broker), text)  # only its matches(): no Redis
    return [d for d in entries if source.matches(d, sel)]


FILTERS = [
    (Selection(type="A"), None),
    (Selection(), "disk"),
    (Selection(), "DISK full"),
    (Selection(type="B"), "full"),
    (Selection(), "échec"),
    (Selection(), "ÉCHEC"),
    (Selection(), "CHEC DU"),
    (Selection(), "strasse"),
    (Selection(), "ß"),
    (Selection(), "k kelvin"),
    (Selection(), "[brackets] (parens) . * + ? ^ $"),
    (Selection(), "%"),
    (Selection(since_ms=40, until_ms=90), None),
    (Selection(type="C", since_ms=100), "e"),
    (Selection(type="Z"), None),
    (Selection(), "no such reason"),
]


async def test_the_count_is_the_entries_the_filter_takes(broker: Broker) -> None:
    entries = await bury(broker, 240)
    for sel, text in FILTERS:
        want = expected(entries, sel, text)
        tally = await dead.count_matching(broker, sel, text)
        assert (tally.matched, tally.cursor) == (len(want), None), (sel, text)
        assert tally.examined == len(entries)
        assert tally.sample == [d.event_id for d in want[:SAMPLE]], (sel, text)
        preview = await dead.preview_matching(broker, sel, text)
        assert (preview.matched, preview.sample) == (len(want), tally.sample)
    everything = await dead.count_matching(broker, Selection())
    assert (everything.matched, everything.cursor) == (240, None)


async def test_a_count_in_slices_counts_on_from_its_cursor(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead, "COUNT_CHUNK", 7)
    entries = await bury(broker, 100)
    want = len(expected(entries, Selection(type="A"), "disk"))
    tally = await dead.count_matching(broker, Selection(type="A"), "disk", budget_s=0)
    slices = 1
    while tally.cursor is not None:
        assert tally.examined < 100
        before = tally
        tally = await dead.count_matching(
            broker, Selection(type="A"), "disk", cursor=tally.cursor, budget_s=0
        )
        assert tally.examined > before.examined
        assert tally.matched >= before.matched
        slices += 1
    assert (tally.matched, tally.examined) == (want, 100)
    assert slices >= 100 // (7 * len(broker.partitions))


async def test_a_count_ends_at_the_entries_newest_at_its_start(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead, "COUNT_CHUNK", 5)
    entries = await bury(broker, 30)
    first = await dead.count_matching(broker, Selection(), "", budget_s=0)  # "" is no text
    assert first.cursor is None
    assert first.matched == 30
    tally = await dead.count_matching(broker, Selection(type="A"), None, budget_s=0)
    assert tally.cursor is not None
    await bury(broker, 20, seed=8)  # dead-lettered after the count began
    while tally.cursor is not None:
        tally = await dead.count_matching(broker, Selection(type="A"), None, cursor=tally.cursor)
    assert tally.matched == len(expected(entries, Selection(type="A"), None))
    assert tally.examined == 30


async def test_a_deleted_entry_is_not_counted(broker: Broker) -> None:
    entries = await bury(broker, 20)
    newest = entries[-1]
    assert await broker.delete_dead([(newest.position, newest.event_id)]) == [newest.event_id]
    tally = await dead.count_matching(broker, Selection(type=newest.type), None)
    assert tally.matched == len(expected(entries[:-1], Selection(type=newest.type), None))


BAD_CURSORS = [
    "garbage",
    "WyJ4Il0",
    dead.encode_token([["-"], [""], -1, 0]),
    dead.encode_token([["(1-1"] * 9, ["1-1"] * 9, 0, 0]),
    dead.encode_token([["x"] * 4, ["1-1"] * 4, 0, 0]),
    dead.encode_token([["-"] * 4, ["1-1 "] * 4, 0, 0]),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_a_cursor_not_made_by_a_count_is_a_422(broker: Broker, cursor: str) -> None:
    with pytest.raises(ValidationError, match="cursor"):
        await dead.count_matching(broker, Selection(type="A"), None, cursor=cursor)


async def test_an_empty_dlq_counts_nothing(broker: Broker) -> None:
    tally = await dead.count_matching(broker, Selection(type="A"), "x")
    assert (tally.matched, tally.examined, tally.sample, tally.cursor) == (0, 0, [], None)


async def test_the_script_ignores_the_case_of_the_text_it_is_given(broker: Broker) -> None:
    # Broker.count_dead takes the text as the caller typed it: the script folds both sides
    entries = await bury(broker, 60)
    ends = await broker.dead_ends()
    spans = {i: ("-", end) for i, end in enumerate(ends) if end}
    want = len(expected(entries, Selection(), "disk full"))
    assert want > 0
    for text in ("disk full", "DISK FULL", "Disk Full"):
        tallies = await broker.count_dead(spans, 1000, DeadFilter(text=text))
        assert sum(t.matched for t in tallies.values()) == want, text
        assert sum(t.examined for t in tallies.values()) == 60
