"""Schema migrations on SQLite and PostgreSQL: from empty, idempotent, concurrent, behind, unknown."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from eventstream.errors import SchemaError
from eventstream.store import create_store, migrations
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
            SchemaError, match=r"schema is at none .* needs 0001: run `eventstream db upgrade`"
        ):
            await store.ensure_schema(auto_upgrade=False)
        # the embedded store (auto_upgrade) adopts it; the row stays
        assert (await store.ensure_schema(auto_upgrade=True)).up_to_date
        assert await store.get("old") == row("old")
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
    from alembic import command

    store = create_store(empty_url)
    try:
        await store.create_schema()

        def down(conn: sa.Connection) -> None:
            command.downgrade(migrations.migrate.config(conn), "base")

        async with store.engine.begin() as conn:
            await conn.run_sync(down)
        assert (await migrations.state(store.engine)).current is None
        assert (await store.ensure_schema(auto_upgrade=False)).up_to_date  # empty again: created
    finally:
        await store.close()
