"""With a SQLite file, the store writes its rows through the standard library's sqlite3 in
a thread of its own; its reads go through aiosqlite. Both see one database, in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from eventstream.store import create_store
from tests.support.factories import row


async def test_rows_written_by_the_writer_thread_are_read_back_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = create_store(f"sqlite+aiosqlite:///{path}")
    await store.create_schema()
    try:
        await store.record([row("a", 2_000), row("b", 1_000)])
        assert any(t.name.startswith("eventstream-store") for t in threading.enumerate())
        assert await store.existing(["a", "b", "c"]) == {"a", "b"}
        assert [r.id for r in (await store.list(10))[0]] == ["a", "b"]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()


async def test_an_in_memory_store_writes_and_reads_one_database() -> None:
    """No file to share: the rows go through aiosqlite's connection like the reads (a
    second engine would open a second, empty, in-memory database)."""
    store = create_store("sqlite+aiosqlite://")
    await store.create_schema()
    try:
        await store.record([row("a")])
        assert await store.existing(["a"]) == {"a"}
    finally:
        await store.close()


async def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    await store.create_schema()
    await store.record([row("a")])
    await store.close()
    await store.close()
    with sqlite3.connect(tmp_path / "events.db") as db:  # the row was committed before close
        assert db.execute("SELECT id FROM eventstream_events").fetchall() == [("a",)]
