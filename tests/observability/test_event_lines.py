"""The rarer lines about one event (reclaims, redeliveries, DLQ moves) name it too:
``event_id``, ``event_type`` and ``attempt``, captured in-process from structlog."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.errors import PermanentError
from eventstream.event import Event, decode_envelope
from eventstream.ingest.accept import now_ms
from eventstream.replay import dead as dlq
from eventstream.store import ProcessedRow, SqlStore
from tests.support.broker import put
from tests.support.factories import make_settings
from tests.support.workers import burst


def lines(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [r for r in logs if r["event"] == event]


def about(record: MutableMapping[str, Any]) -> tuple[str, str, int]:
    return record["event_id"], record["event_type"], record["attempt"]


async def test_a_reclaim_names_each_event_and_a_processed_one_is_said_so(
    redis_url: str, prefix: str, tmp_path: Path, broker: Broker, store: SqlStore
) -> None:
    done_id = await put(broker, "ORDER")
    other_id = await put(broker, "ORDER")
    # a worker reads both, records the first, and dies before acknowledging either
    entries = await broker.read_new("dead-worker", 10, 10)
    env = decode_envelope(entries[0].envelope)
    await store.record(
        [ProcessedRow(env.id, env.type, "{}", None, None, None, None, None, 1, env.receivedAt, now_ms())]
    )
    app = EventStream("test")

    @app.handler("ORDER")
    async def handle(event: Event) -> None:
        return None

    settings = make_settings(redis_url, prefix, tmp_path, visibility_timeout=0.2)
    with capture_logs() as logs:
        await burst(app, settings, broker, store, consumer="rescuer")

    reclaimed = lines(logs, "reclaimed from a silent worker")
    assert sorted(about(r) for r in reclaimed) == sorted([(done_id, "ORDER", 1), (other_id, "ORDER", 1)])
    assert all(r["log_level"] == "info" for r in reclaimed)
    [skipped] = lines(logs, "redelivered but already processed: acknowledged without running")
    # the 1-based number of the try the line is about, as on the reclaim line of the same delivery
    assert about(skipped) == (done_id, "ORDER", 1)


async def test_a_dead_letter_after_repeated_worker_loss_names_the_event(
    redis_url: str, prefix: str, tmp_path: Path, broker: Broker, store: SqlStore
) -> None:
    event_id = await put(broker, "ORDER")
    await broker.read_new("lost-1", 10, 10)  # delivery 1: that worker dies
    app = EventStream("test")

    @app.handler("ORDER")
    async def handle(event: Event) -> None:
        return None

    settings = make_settings(redis_url, prefix, tmp_path, visibility_timeout=0.2, max_deliveries=1)
    with capture_logs() as logs:
        await burst(app, settings, broker, store, consumer="rescuer")

    [dead] = lines(logs, "dead-lettered")
    assert about(dead) == (event_id, "ORDER", 1)
    assert dead["log_level"] == "error"
    assert dead["reason"].startswith("WorkerLost")


async def test_dead_letter_replay_and_delete_each_name_the_event(
    redis_url: str, prefix: str, tmp_path: Path, broker: Broker, store: SqlStore
) -> None:
    event_id = await put(broker, "REFUND")
    app = EventStream("test")

    @app.handler("REFUND")
    async def refund(event: Event) -> None:
        raise PermanentError("refund window closed")

    settings = make_settings(redis_url, prefix, tmp_path)
    with capture_logs() as logs:
        await burst(app, settings, broker, store)
        await dlq.replay_one(broker, event_id)
        await burst(app, settings, broker, store)
        await dlq.delete_one(broker, event_id)

    dead = lines(logs, "dead-lettered")
    assert [about(r) for r in dead] == [(event_id, "REFUND", 1)] * 2
    assert all(r["log_level"] == "error" for r in dead)
    assert all(r["reason"] == "PermanentError: refund window closed" for r in dead)
    [replayed] = lines(logs, "dead event replayed")
    assert about(replayed) == (event_id, "REFUND", 1)
    [deleted] = lines(logs, "dead event deleted")
    assert about(deleted) == (event_id, "REFUND", 1)
    assert not lines(logs, "handler failed, retry scheduled")
