"""The replay engine over its one seam, ``Source``: a source kept in a list shows what the
engine asks of every source (lookups no wider than the call's budget, chunks of the pace,
a cursor that resumes after the last event sent) apart from any backend."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import pytest

from eventstream.errors import ValidationError
from eventstream.replay import engine
from eventstream.replay.engine import Pacer, Page, Position, Preview, Selection, decode_token


@dataclass(frozen=True)
class Item:
    id: str
    type: str
    at_ms: int


@dataclass
class ListSource:
    """Events in a list, oldest first; records every lookup and every chunk sent."""

    items: list[Item]
    lookups: list[list[str]] = field(default_factory=list)
    chunks: list[list[str]] = field(default_factory=list)

    def matches(self, item: Item, sel: Selection) -> bool:
        return (sel.type is None or item.type == sel.type) and sel.in_range(item.at_ms)

    async def find(self, ids: Sequence[str]) -> dict[str, Item]:
        self.lookups.append(list(ids))
        return {i.id: i for i in self.items if i.id in ids}

    async def walk(
        self, sel: Selection, cursor: str | None, most: int, batch: int
    ) -> AsyncGenerator[tuple[Item, Position], None]:
        start = decode_token(cursor, tuple[int])[0] if cursor else 0
        for n, item in enumerate(self.items[start:start + most], start + 1):  # fmt: skip
            if self.matches(item, sel):
                yield item, (n,)

    async def count(self, sel: Selection) -> Preview:
        chosen = [i.id for i in self.items if self.matches(i, sel)]
        return Preview(len(chosen), chosen[: engine.SAMPLE])

    async def send(self, items: list[Item], page: Page) -> None:
        self.chunks.append([i.id for i in items])
        page.replayed += len(items)


class FakeTime(Pacer):
    """A pacer on a clock that only its own sleeps move; ``slept`` lists them."""

    def __init__(self, rate: float) -> None:
        self.now = 0.0
        self.slept: list[float] = []

        async def sleep(s: float) -> None:
            self.slept.append(s)
            self.now += s

        super().__init__(rate, clock=lambda: self.now, sleep=sleep)


class NoWait(Pacer):
    def __init__(self, rate: float) -> None:
        async def sleep(s: float) -> None:
            pass

        super().__init__(rate, sleep=sleep)


def items(n: int, type_: str = "A") -> list[Item]:
    return [Item(f"e{i}", type_, 1000 + i) for i in range(n)]


async def test_a_filtered_replay_goes_in_chunks_and_resumes_after_the_last_sent() -> None:
    source = ListSource(items(25))
    # 100/s: chunks of 10; a budget of 12 events this call
    page = await engine.replay(source, Selection(), rate=100, limit=12, cursor=None, pacer=NoWait(100))
    assert source.chunks == [[f"e{i}" for i in range(10)], ["e10", "e11"]]
    assert (page.replayed, page.next_cursor) == (12, engine.encode_token([12]))
    rest = await engine.replay(source, Selection(), rate=100, limit=100, cursor=page.next_cursor)
    assert (rest.replayed, rest.next_cursor) == (13, None)
    assert [i for chunk in source.chunks for i in chunk] == [f"e{i}" for i in range(25)]


@pytest.mark.parametrize("by_ids", [False, True])
async def test_a_call_that_returns_a_cursor_has_paid_for_its_events(by_ids: bool) -> None:
    source = ListSource(items(5))
    sel = Selection(ids=tuple(i.id for i in source.items)) if by_ids else Selection()
    pacer = FakeTime(1)  # 1/s: chunks of one; a budget of 3
    page = await engine.replay(source, sel, rate=1, limit=3, cursor=None, pacer=pacer)
    assert page.replayed == 3
    # before the 2nd and the 3rd, and after the 3rd: the next call's first goes at once
    assert pacer.slept == pytest.approx([1, 1, 1])
    last = FakeTime(1)
    rest = await engine.replay(source, sel, rate=1, limit=3, cursor=page.next_cursor, pacer=last)
    assert (rest.replayed, rest.next_cursor) == (2, None)
    assert last.slept == pytest.approx([1])  # the replay is done: no wait after its last chunk


async def test_a_replay_by_ids_looks_up_no_more_than_the_budget() -> None:
    source = ListSource([*items(3), Item("b0", "B", 1000)])
    sel = Selection(type="A", ids=("e0", "nope", "b0", "e1", "e0", "e2"))
    page = await engine.replay(source, sel, rate=100, limit=2, cursor=None, pacer=NoWait(100))
    # the budget is 2: "e0" first, then one id at a time until a second one is chosen
    assert source.lookups == [["e0", "nope"], ["b0"], ["e1"]]
    assert source.chunks == [["e0", "e1"]]
    assert (page.replayed, page.not_found) == (2, ["nope"])
    rest = await engine.replay(source, sel, rate=100, limit=2, cursor=page.next_cursor)
    assert (rest.replayed, rest.next_cursor, source.chunks[-1]) == (1, None, ["e2"])
    with pytest.raises(ValidationError, match="cursor"):
        await engine.replay(source, sel, rate=100, limit=2, cursor=engine.encode_token([5]))


async def test_a_preview_by_ids_or_by_filters() -> None:
    source = ListSource([*items(2), Item("b0", "B", 1000)])
    by_ids = await engine.preview(source, Selection(type="A", ids=("b0", "e1", "gone")))
    assert (by_ids.matched, by_ids.sample, by_ids.not_found) == (1, ["e1"], ["gone"])
    assert (await engine.preview(source, Selection(type="B"))).sample == ["b0"]
    assert source.chunks == []


def test_a_selection_describes_itself_for_the_audit_trail() -> None:
    assert Selection().describe() == "all"
    sel = Selection(type="A", since_ms=1, until_ms=2, ids=("x", "y"))
    assert sel.describe() == "type=A since_ms=1 until_ms=2 ids=2"
