"""Handlers that misbehave: whatever a handler raises or refuses to do, its event ends
retried or dead with a readable reason, and the worker goes on serving other events."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, StreamEntry
from eventstream.broker.keys import GROUP
from eventstream.errors import PermanentError, Retry
from eventstream.event import Event
from eventstream.store import SqlStore
from eventstream.worker import Worker
from eventstream.worker.dispatch import Outcome
from tests.support.broker import put
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import burst, dead_entries


class BadStr(Exception):
    def __str__(self) -> str:
        raise ValueError("no str for you")


def _raise(exc: BaseException) -> Callable[[Event], None]:
    def handler(event: Event) -> None:
        raise exc

    return handler


HOSTILE: dict[str, tuple[BaseException, str]] = {
    "surrogate": (RuntimeError("bad \ud800 name"), "RuntimeError: bad \\ud800 name"),
    "sys-exit": (SystemExit(3), "SystemExit: 3"),
    "keyboard-interrupt": (KeyboardInterrupt(), "KeyboardInterrupt"),
    "raising-str": (BadStr(), "BadStr: <the exception's __str__ raised ValueError>"),
    "huge-message": (RuntimeError("x" * 1_000_000), "RuntimeError: xxxx"),
    "permanent-surrogate": (PermanentError("gone \udcff"), "PermanentError: gone \\udcff"),
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_any_base_exception_ends_in_the_dlq_with_a_readable_reason(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore, case: str, sync: bool
) -> None:
    exc, expected = HOSTILE[case]
    app = EventStream("test")
    raise_it = _raise(exc)
    if sync:
        app.handler("BAD", max_attempts=2)(raise_it)
    else:

        async def bad(event: Event) -> None:
            raise_it(event)

        app.handler("BAD", max_attempts=2)(bad)

    @app.handler("OK")
    async def ok(event: Event) -> None:
        return None

    bad_id = await put(broker, "BAD")
    ok_id = await put(broker, "OK")
    worker = await burst(app, mk(max_attempts=2), broker, store)
    assert worker.settled >= 2
    dead = (await dead_entries(redis, broker))[bad_id]
    assert dead.reason.startswith(expected), dead.reason[:200]
    assert len(dead.reason) < 2_100
    assert len(dead.traceback) < 9_200
    dead.reason.encode()
    dead.traceback.encode()
    assert await store.get(ok_id) is not None  # the worker went on
    await assert_conserved(redis, broker, store, [bad_id, ok_id])


async def test_an_infinite_retry_delay_is_capped_and_the_event_retried(
    mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(retry_max_delay=0.05)
    app = EventStream("test")
    tries: list[int] = []

    @app.handler("A")
    async def handle(event: Event) -> None:
        tries.append(event.attempt)
        if event.attempt == 1:
            raise Retry(delay=float("inf"))
        if event.attempt == 2:
            raise Retry(delay=1e18)

    event_id = await put(broker, "A")
    await burst(app, settings, broker, store)
    assert tries == [1, 2, 3]
    assert await store.get(event_id) is not None


async def test_a_handler_that_ignores_cancellation_is_abandoned_and_its_event_retried(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(handler_timeout=0.1, handler_cancel_grace=0.2, max_attempts=2)
    app = EventStream("test")
    release = asyncio.Event()
    tries: list[int] = []

    @app.handler("STUBBORN")
    async def stubborn(event: Event) -> None:
        tries.append(event.attempt)
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # refuses to stop

    @app.handler("OK")
    async def ok(event: Event) -> None:
        return None

    bad_id = await put(broker, "STUBBORN")
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run(burst=True))
    try:
        ok_ids = [await put(broker, "OK") for _ in range(5)]
        await asyncio.wait_for(task, 10)  # the burst ends although two handlers still run
        dead = (await dead_entries(redis, broker))[bad_id]
        assert tries == [1, 2]
        assert dead.reason.startswith(
            "TimeoutError: handler took longer than its timeout of 0.1s and ignored cancellation "
            "for 0.2s; abandoned (gave up after 2 attempts)"
        ), dead.reason
        assert "in stubborn" in dead.traceback  # where it was stuck
        assert len(worker.stuck) == 2
        for event_id in ok_ids:
            assert await store.get(event_id) is not None
        await assert_conserved(redis, broker, store, [bad_id, *ok_ids])
    finally:
        release.set()
        if not task.done():
            task.cancel()
    await asyncio.sleep(0.05)  # the stubborn coroutines end now; their late outcomes are dropped
    assert not worker.stuck
    counters = await broker.counters()
    assert counters["dead_lettered"] == 1
    assert counters.get("processed", 0) == 5


async def test_shutdown_does_not_wait_for_a_handler_that_ignores_cancellation(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(handler_timeout=60, shutdown_grace=0.2, visibility_timeout=30)
    app = EventStream("test")
    release = asyncio.Event()
    started = asyncio.Event()

    @app.handler("STUBBORN")
    async def stubborn(event: Event) -> None:
        started.set()
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    event_id = await put(broker, "STUBBORN")
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        worker.request_stop()
        # grace (0.2 s) + cancelling for at most STOP_TASKS_S: run() returns without the handler
        await asyncio.wait_for(task, 15)
        # the entry was released for another worker at once, not left to the visibility timeout
        [pending] = await redis.xpending_range(broker.keys.stream, GROUP, "-", "+", 10)
        assert pending["time_since_delivered"] >= 30_000  # idle as if its lease ran out
    finally:
        release.set()
    await wait_until(lambda: task.done(), what="the worker to stop")
    assert event_id


async def test_a_stuck_sync_handler_does_not_starve_the_others(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(sync_threads=1, max_attempts=1)
    app = EventStream("test")
    release = threading.Event()

    @app.handler("HANG", timeout=0.05)
    def hang(event: Event) -> None:
        release.wait(10)

    @app.handler("SYNC", timeout=5)
    def fine(event: Event) -> None:
        time.sleep(0.001)

    try:
        hang_id = await put(broker, "HANG")
        await burst(app, settings, broker, store)
        ids = [await put(broker, "SYNC") for _ in range(3)]
        worker = await burst(app, settings, broker, store)
        for event_id in ids:
            assert await store.get(event_id) is not None
        assert hang_id in await dead_entries(redis, broker)
        assert worker.dispatcher.stuck_threads == 0  # a fresh worker, nothing stuck in it
    finally:
        release.set()


def test_the_hostile_cases_cover_base_exceptions() -> None:
    assert any(not isinstance(exc, Exception) for exc, _ in HOSTILE.values())
    assert sys.version_info >= (3, 11)


async def test_a_try_whose_running_fails_still_gets_an_outcome(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # What wraps the handler call (tracing, say) can fail too: the entry must not stay
    # in flight with no outcome; the try counts as failed like a handler's own error.
    app = EventStream("test")

    @app.handler("A", max_attempts=2)
    async def handle(event: Event) -> None:
        return None

    async def broken_wrapper(entry: StreamEntry) -> Outcome:
        raise RuntimeError("the wrapper broke")

    event_id = await put(broker, "A")
    worker = Worker(app, mk(), broker, store)
    worker._run = broken_wrapper
    await asyncio.wait_for(worker.run(burst=True), 30)
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "RuntimeError: the wrapper broke (gave up after 2 attempts)"
    assert dead.attempts == 2
    await assert_conserved(redis, broker, store, [event_id])
