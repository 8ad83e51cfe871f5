"""PostgreSQL serves listing, replay scans and retention from the keyset indexes, no sort."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventstream.store import SqlStore, create_store
from eventstream.store.sql import encode_cursor
from tests.support.factories import row


async def _plan(store: SqlStore, query: Any) -> str:
    sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")  # which index serves it, not what is cheapest
        lines = (await conn.exec_driver_sql(f"EXPLAIN {sql}")).all()
    return "\n".join(str(line[0]) for line in lines)


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    """Only PostgreSQL: SQLite's planner is not what production runs on."""
    store = create_store(postgres_url)
    await store.create_schema()
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("TRUNCATE eventstream_events")
    yield store
    await store.close()


async def test_queries_use_the_keyset_indexes(pg_store: SqlStore) -> None:
    await pg_store.record([row(f"e{i:05d}", 1_000 + i, "A" if i % 2 else "B") for i in range(3000)])
    async with pg_store.engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE eventstream_events")
    cursor = encode_cursor(2_000, "e01000")
    cases = {
        "list": pg_store.list_query(50),
        "list page 2": pg_store.list_query(50, cursor),
        "list by time": pg_store.list_query(50, None, None, 1_500, 2_500),
        "list by type": pg_store.list_query(50, cursor, "A"),
        "scan": pg_store.scan_query(500, (2_000, "e01000")),
        "scan by type": pg_store.scan_query(500, None, "A", 1_000, 3_000),
        "prune": pg_store.prune_query(2_000, 1000),
    }
    for name, query in cases.items():
        plan = await _plan(pg_store, query)
        assert re.search(r"Index (Only )?Scan (Backward )?using ix_eventstream_events_", plan), (name, plan)
        assert "Sort" not in plan, (name, plan)
