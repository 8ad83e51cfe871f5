"""Retention: old rows go in batches, newer stay, the DLQ is untouched, one pruner per period."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError as SettingsError
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker.keys import Keys
from eventstream.errors import PermanentError
from eventstream.event import Event
from eventstream.ops import retention
from eventstream.settings import Settings
from eventstream.store import SqlStore, create_store
from tests.support.asgi import MakeApi
from tests.support.factories import row


async def test_prune_deletes_only_rows_older_than_the_cutoff_in_batches(sql_store: SqlStore) -> None:
    store = sql_store
    await store.record([row(f"old{i:04d}", 1_000 + i) for i in range(1_050)])
    await store.record([row(f"new{i}", 5_000 + i) for i in range(20)])
    calls = 0
    real = store.prune_batch

    async def counting(cutoff: int, batch: int) -> int:
        nonlocal calls
        calls += 1
        return await real(cutoff, batch)

    store.prune_batch = counting  # type: ignore[method-assign]
    assert await retention.prune(store, 5_000, batch=100) == 1_050
    assert calls == 11  # ten full batches, then the short one that ends it
    assert await store.count() == 20
    assert await store.get("new0") is not None
    assert await store.get("old0000") is None
    assert await retention.prune(store, 5_000, batch=100) == 0


async def test_prune_keeps_the_dlq_and_only_one_worker_prunes_per_period(
    redis: Redis, make_api: MakeApi
) -> None:
    api = await make_api(retention=86_400, retention_interval=60)
    app = EventStream()

    @app.handler("*")
    async def handle(event: Event) -> None:
        if event.type == "DEAD":
            raise PermanentError("no")

    for t in ("OK", "DEAD"):
        await api.accepted(t, {})
    await api.burst(app)
    old = row("ancient", 1_000)
    await api.store.record([old])
    settings, broker, store = api.settings, api.broker, api.store
    assert await retention.prune_if_my_turn(settings, broker, store, "w1") == 1
    assert await retention.prune_if_my_turn(settings, broker, store, "w2") is None  # w1 has this period
    assert await store.count() == 1  # the recent processed event stays
    assert (await api.summary())["dlq"] == 1
    assert await redis.pttl(Keys(settings.prefix).lease("retention")) > 50_000


async def test_retention_zero_keeps_everything(make_api: MakeApi) -> None:
    api = await make_api(retention=0)
    await api.store.record([row("ancient", 1)])
    assert await retention.prune_if_my_turn(api.settings, api.broker, api.store, "w") is None
    assert await api.store.count() == 1


async def test_a_batch_larger_than_a_statement_s_parameter_limit_goes_in_one_statement(
    sql_store: SqlStore,
) -> None:
    # SQLite binds at most 32,766 parameters and PostgreSQL 32,767: one per id would fail
    n = 33_000
    await sql_store.record([row(f"old{i:05d}", 1_000 + i) for i in range(n)])
    await sql_store.record([row("new", 90_000)])
    assert await sql_store.prune_batch(90_000, 40_000) == n
    assert await sql_store.count() == 1


async def test_another_writer_is_not_blocked_while_a_prune_runs(sql_store: SqlStore, store_url: str) -> None:
    """Between batches, a second store (its own connections, as in another process) records rows."""
    await sql_store.record([row(f"old{i:03d}", 1_000 + i) for i in range(500)])
    writer = create_store(store_url)
    real = sql_store.prune_batch
    written: list[str] = []

    async def batch_then_write(cutoff: int, batch: int) -> int:
        gone = await real(cutoff, batch)
        event_id = f"live{len(written)}"
        await asyncio.wait_for(writer.record([row(event_id, 50_000)]), timeout=10)
        written.append(event_id)
        return gone

    sql_store.prune_batch = batch_then_write  # type: ignore[method-assign]
    try:
        assert await retention.prune(sql_store, 5_000, batch=100) == 500
    finally:
        await writer.close()
    assert len(written) == 6  # five full batches and the empty one that ends it
    assert await sql_store.count() == 6


def test_the_retention_batch_is_capped() -> None:
    with pytest.raises(SettingsError, match="retention_batch"):
        Settings(retention_batch=10_001)
    assert Settings(retention_batch=10_000).retention_batch == 10_000


def test_a_retention_shorter_than_the_dedupe_window_is_refused() -> None:
    with pytest.raises(
        SettingsError, match=r"EVENTSTREAM_RETENTION .* shorter than EVENTSTREAM_DEDUPE_WINDOW"
    ):
        Settings(retention=3600, dedupe_window=7200)
    assert Settings(retention=7200, dedupe_window=7200).retention == 7200
    assert Settings(retention=0, dedupe_window=7200).retention == 0


def test_cutoff() -> None:
    assert retention.cutoff_ms(1.5, now_ms=10_000) == 8_500


def test_db_prune_refuses_an_age_below_the_dedupe_window_and_says_why(tmp_path: Path) -> None:
    from tests.support.cli import run_cli

    env = {"EVENTSTREAM_DATA_DIR": str(tmp_path), "EVENTSTREAM_DEDUPE_WINDOW": "3600"}
    refused = run_cli("db", "prune", "--dry-run", "--older-than", "1", env=env)
    assert refused.code == 2
    assert "--older-than 1 s is shorter than the dedupe window (3600 s" in refused.stderr
    assert "pydantic" not in refused.stderr
    counted = run_cli("db", "prune", "--dry-run", "--older-than", "3600", env=env)
    assert counted.code == 0, counted.stderr
    assert counted.stdout.strip() == "would delete 0 processed event(s) older than 3600 s"
