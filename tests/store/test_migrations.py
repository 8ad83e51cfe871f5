"""Schema migrations on SQLite and PostgreSQL: from empty, idempotent, concurrent, behind, from 0001
with rows, unknown, down."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from eventstream.errors import SchemaError
from eventstream.store import SqlStore, create_store, migrations
from eventstream.store.migrations.migrate import VERSION_TABLE
from eventstream.store.sql import metadata
from tests.support.factories import row


async def _tables(url: str) -> set[str]:
    store = create_store(url)
    try:
        async with store.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await store.close()


async def _downgrade(store: SqlStore, target: str) -> None:
    from alembic import command

    def down(conn: sa.Connection) -> None:
        command.downgrade(migrations.migrate.config(conn), target)

    async with store.engine.begin() as conn:
        await conn.run_sync(down)


async def test_upgrade_from_empty_creates_the_schema_at_head(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        before = await migrations.state(store.engine)
        assert (before.current, before.empty) == (None, True)
        after = await migrations.upgrade(store.engine)
        assert after.current == migrations.head() == after.head
        await store.record([row("a")])
        assert await store.count() == 1
        async with store.engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("eventstream_events"))
        assert {ix["name"]: ix["column_names"] for ix in indexes} == {
            "ix_eventstream_events_processed": ["processed_at_ms", "id"],
            "ix_eventstream_events_type_processed": ["type", "processed_at_ms", "id"],
        }
    finally:
        await store.close()
    assert await _tables(empty_url) == {"eventstream_events", VERSION_TABLE}


async def test_upgrade_again_is_a_no_op_that_keeps_the_rows(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        await store.create_schema()
        await store.record([row("kept")])
        await store.create_schema()
        assert (await store.ensure_schema(auto_upgrade=False)).up_to_date
        assert await store.count() == 1
    finally:
        await store.close()


async def test_concurrent_upgrades_of_an_empty_database_create_it_once(empty_url: str) -> None:
    stores = [create_store(empty_url) for _ in range(4)]
    try:
        states = await asyncio.gather(*(s.ensure_schema(auto_upgrade=False) for s in stores))
        assert all(st.up_to_date for st in states)
        await stores[0].record([row("a")])
        assert await stores[3].count() == 1
    finally:
        for s in stores:
            await s.close()


async def test_a_database_made_before_migrations_is_behind_then_adopted(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        async with store.engine.begin() as conn:  # how the store used to create its table
            await conn.run_sync(metadata.create_all)
        await store.record([row("old")])
        st = await migrations.state(store.engine)
        assert (st.current, st.empty, st.up_to_date) == (None, False, False)
        with pytest.raises(
            SchemaError,
            match=rf"schema is at none .* needs {migrations.head()}: run `eventstream db upgrade`",
        ):
            await store.ensure_schema(auto_upgrade=False)
        # the embedded store (auto_upgrade) adopts it; the row stays
        assert (await store.ensure_schema(auto_upgrade=True)).up_to_date
        assert await store.get("old") == row("old")
    finally:
        await store.close()


async def test_a_database_at_0001_with_rows_upgrades_and_keeps_them(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        await migrations.upgrade(store.engine, "0001")
        names = [c for c in row("x")._fields if c not in ("ordering_key", "causation_id", "children")]
        values = ", ".join(f":{c}" for c in names)
        insert = sa.text(f"INSERT INTO eventstream_events ({', '.join(names)}) VALUES ({values})")
        async with store.engine.begin() as conn:  # rows as a worker of that version wrote them
            old = [row(f"old-{i}", 1_000 + i).as_dict() for i in range(3)]
            await conn.execute(insert, [{c: r[c] for c in names} for r in old])
        st = await migrations.state(store.engine)
        assert (st.current, st.empty, st.up_to_date) == ("0001", False, False)
        with pytest.raises(SchemaError, match="schema is at 0001, this version of EventStream needs 0003"):
            await store.ensure_schema(auto_upgrade=False)

        assert (await migrations.upgrade(store.engine)).current == "0003"
        assert await store.count() == 3
        assert [r.id for r in (await store.list(10))[0]] == ["old-2", "old-1", "old-0"]
        assert await store.get("old-1") == row("old-1", 1_001)  # ordering_key None
        await store.record([row("new", 2_000, ordering_key="account-7")])
        assert (await store.get("new")) == row("new", 2_000, ordering_key="account-7")
        child = row("child", 2_001)._replace(causation_id="new", children='["grandchild"]')
        await store.record([child])
        assert (await store.get("child")) == child
        async with store.engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: sa.inspect(c).get_indexes("eventstream_events"))
        assert {ix["name"] for ix in indexes} == {
            "ix_eventstream_events_processed",
            "ix_eventstream_events_type_processed",
        }
    finally:
        await store.close()


async def test_downgrade_to_0001_keeps_the_rows_without_their_ordering_keys(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        await store.create_schema()
        await store.record([row("a", ordering_key="k"), row("b", 1_001)])
        await _downgrade(store, "0001")
        async with store.engine.connect() as conn:
            columns = await conn.run_sync(lambda c: sa.inspect(c).get_columns("eventstream_events"))
            ids = (await conn.execute(sa.text("SELECT id FROM eventstream_events ORDER BY id"))).scalars()
            assert list(ids) == ["a", "b"]
        assert "ordering_key" not in {c["name"] for c in columns}
        assert (await migrations.state(store.engine)).current == "0001"
        assert (await store.ensure_schema(auto_upgrade=True)).up_to_date
        assert await store.get("a") == row("a")  # its key went with the column
    finally:
        await store.close()


async def test_a_revision_this_code_does_not_know_is_refused_even_with_auto_upgrade(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        await store.create_schema()
        async with store.engine.begin() as conn:
            await conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'fffe'"))
        with pytest.raises(SchemaError, match="does not know") as err:
            await store.ensure_schema(auto_upgrade=True)
        assert (err.value.current, err.value.needed) == ("fffe", migrations.head())
    finally:
        await store.close()


async def test_downgrade_to_base_then_start_again(empty_url: str) -> None:
    store = create_store(empty_url)
    try:
        await store.create_schema()
        await _downgrade(store, "base")
        assert (await migrations.state(store.engine)).current is None
        assert (await store.ensure_schema(auto_upgrade=False)).up_to_date  # empty again: created
    finally:
        await store.close()
