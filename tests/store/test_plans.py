"""PostgreSQL serves listing, replay scans and retention from the keyset indexes, no sort."""

from __future__ import annotations

import re
from typing import Any

import pytest

from eventstream.store import SqlStore
from eventstream.store.sql import encode_cursor
from tests.store.test_sql_store import row


async def _plan(store: SqlStore, query: Any) -> str:
    sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    async with store.engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")  # which index serves it, not what is cheapest
        lines = (await conn.exec_driver_sql(f"EXPLAIN {sql}")).all()
    return "\n".join(str(line[0]) for line in lines)


async def test_queries_use_the_keyset_indexes(sql_store: SqlStore) -> None:
    if sql_store.dialect != "postgresql":
        pytest.skip("query plans are checked on PostgreSQL")
    await sql_store.record([row(f"e{i:05d}", 1_000 + i, "A" if i % 2 else "B") for i in range(3000)])
    async with sql_store.engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE eventstream_events")
    cursor = encode_cursor(2_000, "e01000")
    cases = {
        "list": sql_store.list_query(50),
        "list page 2": sql_store.list_query(50, cursor),
        "list by time": sql_store.list_query(50, None, None, 1_500, 2_500),
        "list by type": sql_store.list_query(50, cursor, "A"),
        "scan": sql_store.scan_query(500, (2_000, "e01000")),
        "scan by type": sql_store.scan_query(500, None, "A", 1_000, 3_000),
        "prune": sql_store.prune_query(2_000, 1000),
    }
    for name, query in cases.items():
        plan = await _plan(sql_store, query)
        assert re.search(r"Index (Only )?Scan (Backward )?using ix_eventstream_events_", plan), (name, plan)
        assert "Sort" not in plan, (name, plan)
