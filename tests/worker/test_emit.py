"""Workers and follow-ups (Event.emit): a returned try's follow-ups are enqueued with its
completion and run with ``causation_id``; a failed try emits nothing; a try that runs
again cannot double them; a worker that died between the store row and the completion
leaves them staged for the redelivery; keyed follow-ups of other partitions are relayed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, Layout
from eventstream.errors import PermanentError, ValidationError
from eventstream.event import Event, decode_envelope
from eventstream.store import SqlStore
from eventstream.worker.dispatch import Done
from eventstream.worker.follow_ups import stage
from eventstream.worker.settle import write_rows
from tests.support.broker import put
from tests.support.conservation import assert_conserved, check_layout
from tests.support.factories import SettingsFactory
from tests.support.workers import burst, dead_entries


class Seen:
    """What the handlers ran: (type, id, causation id, payload) per run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, str | None, dict[str, Any]]] = []

    def add(self, event: Event) -> None:
        self.runs.append((event.type, event.id, event.causation_id, event.payload))

    def of(self, type_: str) -> list[tuple[str, str, str | None, dict[str, Any]]]:
        return [r for r in self.runs if r[0] == type_]


def order_app(seen: Seen, fail_first: bool = False, ship_key: str | None = "acct-1") -> EventStream:
    app = EventStream("emit")

    @app.handler("ORDER", max_attempts=3, retry_delay=0)
    async def order(event: Event) -> None:
        seen.add(event)
        event.emit("SHIP", {"order": event.payload.get("n")}, ordering_key=ship_key)
        event.emit("MAIL", {"to": "a@example.com"}, source="orders")
        if fail_first and event.attempt == 1:
            raise RuntimeError("the first try fails after emitting")

    @app.handler("SHIP")
    def ship(event: Event) -> None:  # a sync handler, in a thread
        seen.add(event)

    @app.handler("MAIL")
    async def mail(event: Event) -> None:
        seen.add(event)

    return app


async def test_follow_ups_run_after_their_parent_and_name_it(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    parents = [await put(broker, "ORDER", {"n": n}) for n in range(3)]
    seen = Seen()

    await burst(order_app(seen), mk(), broker, store)

    assert sorted(r[1] for r in seen.of("ORDER")) == sorted(parents)
    for kind in ("SHIP", "MAIL"):
        runs = seen.of(kind)
        assert sorted(r[2] or "" for r in runs) == sorted(parents)  # one per parent, naming it
    for parent in parents:
        row = await store.get(parent)
        assert row is not None
        assert row.children is not None
        children = json.loads(row.children)
        assert len(children) == 2
        for child in children:
            child_row = await store.get(child)
            assert child_row is not None
            assert child_row.causation_id == parent
    ship = await store.get(next(r[1] for r in seen.of("SHIP")))
    assert ship is not None
    assert ship.ordering_key == "acct-1"
    counters = await broker.counters()
    assert (counters["emitted"], counters["received"], counters["processed"]) == (6, 9, 9)
    await assert_conserved(redis, broker, store, [r[1] for r in seen.runs])


async def test_a_failed_try_emits_nothing_and_the_next_try_emits_once(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    parent = await put(broker, "ORDER", {"n": 1})
    seen = Seen()

    await burst(order_app(seen, fail_first=True), mk(), broker, store)

    assert len(seen.of("ORDER")) == 2  # failed once, then succeeded
    assert len(seen.of("SHIP")) == 1
    assert len(seen.of("MAIL")) == 1
    assert (await broker.counters())["emitted"] == 2
    await assert_conserved(redis, broker, store, [parent, *(r[1] for r in seen.runs)])


async def test_a_dead_parent_emits_nothing(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("emit")

    @app.handler("ORDER")
    async def order(event: Event) -> None:
        event.emit("SHIP", {})
        raise PermanentError("refused after emitting")

    parent = await put(broker, "ORDER")
    await burst(app, mk(), broker, store)

    assert list(await dead_entries(redis, broker)) == [parent]
    assert "emitted" not in await broker.counters()
    await assert_conserved(redis, broker, store, [parent])


async def test_an_invalid_follow_up_fails_the_try_with_a_readable_reason(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("emit")
    caught: list[ValidationError] = []

    @app.handler("ORDER", max_attempts=1)
    async def order(event: Event) -> None:
        try:
            event.emit("SHIP", {"when": object()})  # not JSON: the handler may catch it
        except ValidationError as exc:
            caught.append(exc)
        event.emit("not a type!", {})

    parent = await put(broker, "ORDER")
    await burst(app, mk(), broker, store)

    assert len(caught) == 1
    assert "cannot be written as JSON" in caught[0].detail
    dead = (await dead_entries(redis, broker))[parent]
    assert dead.reason.startswith("ValidationError: invalid event:")
    assert "$.type" in dead.reason
    assert "emitted" not in await broker.counters()


async def test_a_parent_found_in_the_store_completes_with_its_staged_follow_ups(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    """A worker ran the handler, staged its follow-ups, wrote the store row and died
    before the completion: the redelivery does not run the handler again, and the
    follow-ups exist exactly once."""
    parent = await put(broker, "ORDER", {"n": 7})
    [entry] = await broker.read_new("dead-worker", 10, 10)
    env = decode_envelope(entry.envelope)
    event = Event.from_envelope(env, 1)
    children = [event.emit("SHIP", {"order": 7}), event.emit("MAIL", {})]
    done = Done(entry, env, 1, 0.001, False, event.follow_ups)
    await broker.stage_follow_ups([(entry.partition, parent, stage(event.follow_ups))])
    await write_rows(store, [done])  # ... and the worker dies here

    seen = Seen()
    await burst(order_app(seen), mk(visibility_timeout=0.2), broker, store, consumer="rescuer")

    assert seen.of("ORDER") == []  # found in the store: not run again
    assert sorted(r[1] for r in seen.runs) == sorted(children)
    counters = await broker.counters()
    assert (counters["redelivered_skipped"], counters["emitted"]) == (1, 2)
    await assert_conserved(redis, broker, store, [parent, *children])


async def test_a_parent_that_died_before_its_store_row_runs_again_and_emits_the_same_ids(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    parent = await put(broker, "ORDER", {"n": 8})
    [entry] = await broker.read_new("dead-worker", 10, 10)
    event = Event.from_envelope(decode_envelope(entry.envelope), 1)
    first = [event.emit("SHIP", {"order": 8}, ordering_key="acct-1"), event.emit("MAIL", {}, source="orders")]
    await broker.stage_follow_ups([(entry.partition, parent, stage(event.follow_ups))])  # ... dies here

    seen = Seen()
    await burst(order_app(seen), mk(visibility_timeout=0.2), broker, store, consumer="rescuer")

    assert [r[1] for r in seen.of("ORDER")] == [parent]
    assert sorted(r[1] for r in seen.runs if r[0] != "ORDER") == sorted(first)
    assert (await broker.counters())["emitted"] == 2
    await assert_conserved(redis, broker, store, [parent, *first])


@pytest.fixture
def cluster_redis(server_or_cluster: Any) -> Any:
    return server_or_cluster


async def test_keyed_follow_ups_reach_their_partitions(
    cluster_redis: Redis, mk: SettingsFactory, store: SqlStore, prefix: str
) -> None:
    """Four partitions: follow-ups whose keys name another partition go through the
    outbox; the worker relays them and runs them; nothing is left behind."""
    layout = Layout(prefix, 4)
    broker = Broker(cluster_redis, layout)
    await broker.ensure_group()
    app = EventStream("emit")
    seen = Seen()

    @app.handler("ORDER")
    async def order(event: Event) -> None:
        seen.add(event)
        for i in range(8):
            event.emit("SHIP", {"i": i}, ordering_key=f"acct-{event.payload['n']}-{i}")

    @app.handler("SHIP")
    async def ship(event: Event) -> None:
        seen.add(event)

    parents = [await put(broker, "ORDER", {"n": n}) for n in range(5)]
    await burst(app, mk(partitions=4), broker, store)

    assert len(seen.of("SHIP")) == 40
    assert {r[2] for r in seen.of("SHIP")} == set(parents)
    states = await check_layout(cluster_redis, layout)
    assert all(s.outbox == {} and s.emits == {} for s in states)
    assert sum(s.counter("emitted") for s in states) == 40
    assert sum(s.counter("received") for s in states) == 45
    assert sum(s.counter("processed") for s in states) == 45


async def test_a_handler_unit_test_can_see_what_was_emitted() -> None:
    seen = Seen()
    app = order_app(seen)
    handler = app.handler_for("ORDER")
    assert handler is not None
    event = Event("0190f4a2-0000-7000-8000-000000000001", "ORDER", {"n": 3}, 1, datetime.now(UTC))
    await handler.func(event)  # type: ignore[misc]
    assert [(f.type, f.payload, f.ordering_key) for f in event.follow_ups] == [
        ("SHIP", {"order": 3}, "acct-1"),
        ("MAIL", {"to": "a@example.com"}, None),
    ]
