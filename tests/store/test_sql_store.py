"""SqlStore on SQLite and PostgreSQL: record (upsert by id), existing, get, list, count."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventstream.errors import ConfigError, ValidationError
from eventstream.store import ProcessedRow, SqlStore, create_store
from eventstream.store.sql import decode_cursor, encode_cursor
from tests.support.factories import row


def newest_first(rows: list[ProcessedRow]) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.processed_at_ms, r.id), reverse=True)]


async def page_all(store: SqlStore, limit: int, **filters: Any) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        rows, cursor = await store.list(limit, cursor, **filters)
        assert len(rows) <= limit
        pages += 1
        ids += [r.id for r in rows]
        if cursor is None:
            return ids, pages
        assert len(rows) == limit
        assert pages <= 1000


async def test_record_inserts_a_batch(sql_store: SqlStore) -> None:
    rows = [
        row("a", 1_000),
        row(
            "b",
            2_000,
            "PAYMENT",
            payload='{"amount": 12.5, "items": [1, 2], "note": "caf\\u00e9 \\u2713"}',
            source="web",
            severity="warning",
            timestamp="2026-01-01T00:00:00Z",
            idempotency_key="k" * 256,
            replay_of="a",
            attempts=3,
        ),
        row("c" * 64, 3_000, "X" * 128, source="s" * 256, severity="v" * 32),
    ]
    await sql_store.record(rows)
    assert await sql_store.count() == 3
    for r in rows:
        assert await sql_store.get(r.id) == r


async def test_record_keeps_unicode(sql_store: SqlStore) -> None:
    r = row("u", payload=msgspec.json.encode({"t": "✓ café 🙂"}).decode(), source="Zürich 🙂")
    await sql_store.record([r])
    got = await sql_store.get("u")
    assert got == r
    assert msgspec.json.decode(got.payload) == {"t": "✓ café 🙂"}


async def test_record_nothing_is_a_no_op(sql_store: SqlStore) -> None:
    await sql_store.record([])
    assert await sql_store.count() == 0


async def test_recording_an_id_again_keeps_one_row(sql_store: SqlStore) -> None:
    first = row("dup", 1_000, attempts=1)
    await sql_store.record([first])
    # the redelivery case: the same event recorded again, maybe with other details
    await sql_store.record([row("dup", 9_000, attempts=2, payload='{"other": true}')])
    assert await sql_store.count() == 1
    assert await sql_store.get("dup") == first
    # a batch mixing a known id and new ones inserts the new ones and keeps the known row
    await sql_store.record([row("new1", 2_000), row("dup", 5_000, attempts=5), row("new2", 3_000)])
    assert await sql_store.count() == 3
    assert await sql_store.get("dup") == first
    assert await sql_store.existing(["new1", "new2"]) == {"new1", "new2"}


async def test_same_id_twice_in_one_batch_keeps_one_row(sql_store: SqlStore) -> None:
    await sql_store.record([row("twice", 1_000), row("twice", 1_000), row("once", 1_000)])
    assert await sql_store.count() == 2
    rows, _ = await sql_store.list(10)
    assert sorted(r.id for r in rows) == ["once", "twice"]


async def test_existing(sql_store: SqlStore) -> None:
    await sql_store.record([row(f"e{i}") for i in range(5)])
    assert await sql_store.existing([]) == set()
    assert await sql_store.existing(["e1", "e3", "zzz"]) == {"e1", "e3"}
    assert await sql_store.existing(["nope"]) == set()
    many = [f"e{i}" for i in range(5)] + [f"x{i}" for i in range(2_000)]
    assert await sql_store.existing(many) == {f"e{i}" for i in range(5)}


async def test_get(sql_store: SqlStore) -> None:
    r = row("there")
    await sql_store.record([r])
    assert await sql_store.get("there") == r
    assert await sql_store.get("not-there") is None
    assert await sql_store.get("") is None
    assert await sql_store.get("the\x00re") is None  # PostgreSQL refuses NUL in a query


async def test_count(sql_store: SqlStore) -> None:
    assert await sql_store.count() == 0
    await sql_store.record([row(f"c{i}") for i in range(7)])
    assert await sql_store.count() == 7


async def test_list_is_newest_first(sql_store: SqlStore) -> None:
    rows = [row("old", 1_000), row("new", 3_000), row("mid", 2_000), row("mid-b", 2_000)]
    await sql_store.record(rows)
    got, cursor = await sql_store.list(10)
    assert [r.id for r in got] == ["new", "mid-b", "mid", "old"]
    assert cursor is None
    assert got[0] == rows[1]


async def test_list_of_an_empty_store(sql_store: SqlStore) -> None:
    assert await sql_store.list(5) == ([], None)


@pytest.mark.parametrize("limit", [1, 3, 7, 10, 70, 71, 500])
async def test_keyset_paging_over_equal_times_has_no_repeats_or_gaps(sql_store: SqlStore, limit: int) -> None:
    # 70 rows, in runs of 10 sharing one processed_at_ms, inserted out of order
    rows = [row(f"id{(i * 37) % 70:02d}", 5_000 + ((i * 37) % 70) // 10) for i in range(70)]
    await sql_store.record(rows)
    ids, pages = await page_all(sql_store, limit)
    assert ids == newest_first(rows)
    assert pages == max(1, -(-70 // limit))  # no trailing empty page


async def test_paging_sees_rows_added_meanwhile_only_after_the_cursor(sql_store: SqlStore) -> None:
    await sql_store.record([row(f"p{i}", 1_000 + i) for i in range(6)])
    first, cursor = await sql_store.list(3)
    assert [r.id for r in first] == ["p5", "p4", "p3"]
    await sql_store.record([row("newest", 9_999), row("p3a", 1_003), row("p2a", 1_002)])
    second, cursor = await sql_store.list(3, cursor)
    # "newest" and "p3a" sort before the cursor (p3) and are not seen; "p2a" after it is
    assert [r.id for r in second] == ["p2a", "p2", "p1"]
    third, cursor = await sql_store.list(3, cursor)
    assert [r.id for r in third] == ["p0"]
    assert cursor is None


async def test_filters_type_since_until(sql_store: SqlStore) -> None:
    rows = [row(f"f{i}", 10_000 + i * 100, "A" if i % 3 == 0 else "B") for i in range(12)]
    await sql_store.record(rows)

    def expect(keep: Any) -> list[str]:
        return newest_first([r for r in rows if keep(r)])

    ids, _ = await page_all(sql_store, 2, type_="A")
    assert ids == expect(lambda r: r.type == "A")
    ids, _ = await page_all(sql_store, 2, since_ms=10_300)
    assert ids == expect(lambda r: r.processed_at_ms >= 10_300)  # inclusive
    ids, _ = await page_all(sql_store, 2, until_ms=10_300)
    assert ids == expect(lambda r: r.processed_at_ms < 10_300)  # exclusive
    ids, _ = await page_all(sql_store, 1, type_="B", since_ms=10_200, until_ms=10_800)
    assert ids == expect(lambda r: r.type == "B" and 10_200 <= r.processed_at_ms < 10_800)
    assert ids == ["f7", "f5", "f4", "f2"]
    assert await sql_store.list(10, type_="C") == ([], None)
    assert await sql_store.list(10, since_ms=10_500, until_ms=10_500) == ([], None)


def raw_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


BAD_CURSORS = [
    "not a cursor",
    "!!!!",
    "e30",  # {}
    raw_cursor([1]),
    raw_cursor([1, "a", "b"]),
    raw_cursor(["1", "a"]),
    raw_cursor([1.5, "a"]),
    raw_cursor([2**63, "a"]),
    raw_cursor([-(2**63) - 1, "a"]),
    raw_cursor([1, None]),
    raw_cursor([1, "a\x00"]),
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_invalid_cursor_is_a_validation_error(sql_store: SqlStore, cursor: str) -> None:
    await sql_store.record([row("a")])
    with pytest.raises(ValidationError, match="cursor"):
        await sql_store.list(5, cursor)


async def test_cursor_at_the_ends_of_the_range(sql_store: SqlStore) -> None:
    await sql_store.record([row("a", 1_000)])
    assert [r.id for r in (await sql_store.list(5, encode_cursor(2**63 - 1, "")))[0]] == ["a"]
    assert (await sql_store.list(5, encode_cursor(-(2**63), "")))[0] == []


def test_cursor_round_trip() -> None:
    for at, event_id in [(0, ""), (1_700_000_000_000, "0190b3c2-aaaa"), (2**63 - 1, "x" * 64)]:
        cursor = encode_cursor(at, event_id)
        assert "=" not in cursor
        assert decode_cursor(cursor) == (at, event_id)


async def test_create_schema_twice_keeps_the_rows(sql_store: SqlStore) -> None:
    await sql_store.record([row("kept")])
    await sql_store.create_schema()
    assert await sql_store.count() == 1


async def test_ping(sql_store: SqlStore) -> None:
    await sql_store.ping()


async def test_two_stores_on_one_database_see_each_other(sql_store: SqlStore, store_url: str) -> None:
    other = create_store(store_url)
    try:
        await other.record([row("from-other")])
        assert await sql_store.existing(["from-other"]) == {"from-other"}
        await other.record([row("from-other", attempts=9)])
        assert await sql_store.count() == 1
    finally:
        await other.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "nosuchdb://host/db",
        "postgresql+nosuchdriver://u@h/db",
        "sqlite:///plain-sync-driver.db",
        "sqlite+aiosqlite:///x.db?timeout=soon",
    ],
)
def test_create_store_with_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="database URL"):
        create_store(url)


async def test_sqlite_store_creates_its_file(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    store = create_store(f"sqlite+aiosqlite:///{path}")
    try:
        await store.create_schema()
        await store.record([row("a")])
        assert path.exists()
        assert store.dialect == "sqlite"
    finally:
        await store.close()
