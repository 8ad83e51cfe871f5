"""Failures through a real worker: timeouts, retries, the DLQ, PermanentError, Retry, overrides."""

from __future__ import annotations

import asyncio
import threading

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.errors import PermanentError, Retry
from eventstream.event import Event, decode_envelope
from eventstream.ingest.accept import now_ms
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.broker import put
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import burst, dead_entries


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_handler_timeout_is_a_failed_attempt(
    redis: Redis, kind: str, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(handler_timeout=0.2, max_attempts=3)
    attempts: list[int] = []
    release = threading.Event()
    app = EventStream("test")

    if kind == "async":

        @app.handler("A")
        async def slow_async(event: Event) -> None:
            attempts.append(event.attempt)
            if event.attempt < 3:
                await asyncio.sleep(10)  # cancelled by the timeout

    else:

        @app.handler("A")
        def slow_sync(event: Event) -> None:
            attempts.append(event.attempt)
            if event.attempt < 3:
                release.wait(10)  # outlives its timeout; freed at the end of the test

    event_id = await put(broker, "A")
    try:
        await burst(app, settings, broker, store)
    finally:
        release.set()

    assert attempts == [1, 2, 3]
    row = await store.get(event_id)
    assert row is not None
    assert row.attempts == 3
    counters = await broker.counters()
    assert counters["failed"] == 2
    assert counters["retried"] == 2
    assert counters["processed"] == 1
    await assert_conserved(redis, broker, store, [event_id])


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_timeout_reason_names_the_timeout(
    redis: Redis, kind: str, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(handler_timeout=0.1, max_attempts=1)
    release = threading.Event()
    app = EventStream("test")

    if kind == "async":

        @app.handler("A")
        async def slow_async(event: Event) -> None:
            await asyncio.sleep(10)

    else:

        @app.handler("A")
        def slow_sync(event: Event) -> None:
            release.wait(10)

    event_id = await put(broker, "A")
    try:
        await burst(app, settings, broker, store)
    finally:
        release.set()
    dead = (await dead_entries(redis, broker))[event_id]
    assert (
        dead.reason == "TimeoutError: handler took longer than its timeout of 0.1s (gave up after 1 attempt)"
    )
    assert dead.attempts == 1
    assert (await broker.counters())["failed"] == 1


async def test_handler_raising_timeout_error_itself_keeps_its_message(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(handler_timeout=5.0, max_attempts=1)
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        raise TimeoutError("upstream API timed out")

    event_id = await put(broker, "A")
    await burst(app, settings, broker, store)
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "TimeoutError: upstream API timed out (gave up after 1 attempt)"


async def test_retries_then_dead_letter_with_full_record(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(max_attempts=4)
    calls: list[tuple[int, int]] = []  # (attempt, ms when called)
    app = EventStream("test")

    @app.handler("PAY")
    def handle(event: Event) -> None:
        calls.append((event.attempt, now_ms()))
        raise ValueError("card declined")

    event_id = await put(broker, "PAY", {"amount": 5})
    envelope_before = (await redis.xrange(broker.keys.stream, "-", "+"))[0][1]["e"]
    await burst(app, settings, broker, store)
    end = now_ms()

    assert [a for a, _ in calls] == [1, 2, 3, 4]
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "ValueError: card declined (gave up after 4 attempts)"
    assert dead.attempts == 4
    assert dead.type == "PAY"
    assert "Traceback (most recent call last)" in dead.traceback
    assert 'raise ValueError("card declined")' in dead.traceback
    assert dead.traceback.rstrip().endswith("ValueError: card declined")
    # first failure: during the first call; last failure: during or after the last call
    assert calls[0][1] <= dead.first_failure_ms <= calls[1][1]
    assert calls[3][1] <= dead.last_failure_ms <= end
    assert dead.first_failure_ms < dead.last_failure_ms
    # the envelope is carried unchanged through every retry into the DLQ
    assert dead.envelope == envelope_before
    assert decode_envelope(dead.envelope).payload == {"amount": 5}

    counters = await broker.counters()
    assert counters["failed"] == 4
    assert counters["retried"] == 3
    assert counters["dead_lettered"] == 1
    assert counters.get("processed", 0) == 0
    assert await store.get(event_id) is None
    await assert_conserved(redis, broker, store, [event_id])


async def test_one_attempt_is_singular_in_the_reason(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        raise KeyError("k")

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=1), broker, store)
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "KeyError: 'k' (gave up after 1 attempt)"


async def test_exception_without_message_reason_is_its_type(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        raise RuntimeError

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=2), broker, store)
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "RuntimeError (gave up after 2 attempts)"


async def test_failures_then_success_records_attempts(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore
) -> None:
    attempts: list[int] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt < 3:
            raise ConnectionError("flaky")

    event_id = await put(broker, "A")
    await burst(app, settings, broker, store)
    assert attempts == [1, 2, 3]
    row = await store.get(event_id)
    assert row is not None
    assert row.attempts == 3
    counters = await broker.counters()
    assert (counters["failed"], counters["retried"], counters["processed"]) == (2, 2, 1)
    assert counters.get("dead_lettered", 0) == 0
    await assert_conserved(redis, broker, store, [event_id])


async def test_retry_is_scheduled_with_backoff_and_status(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # A long backoff keeps the retry scheduled, so where it waits can be inspected.
    settings = mk(retry_delay=1000.0, retry_max_delay=1000.0, max_attempts=5)
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        raise ValueError("later")

    event_id = await put(broker, "A")
    before = now_ms()
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _scheduled(redis, broker, event_id), what="the retry to be scheduled")
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 10)
    after = now_ms()
    due = await redis.zscore(broker.keys.retry, event_id)
    assert due is not None
    # full jitter: due anywhere in [failure, failure + retry_delay]
    assert before <= due <= after + 1000 * 1000
    status = await redis.hget(broker.keys.status, event_id)
    assert status is not None
    attempts, first = status.split(":")[1:]
    assert attempts == "1"
    assert before <= int(first) <= after
    assert await redis.hexists(broker.keys.retry_body, event_id)
    places = await assert_conserved(redis, broker, store, [event_id])
    assert places == {event_id: "retry"}


async def _scheduled(redis: Redis, broker: Broker, event_id: str) -> bool:
    return await redis.zscore(broker.keys.retry, event_id) is not None


async def test_permanent_error_dead_letters_on_first_attempt(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    class InvalidOrder(PermanentError):
        pass

    calls: list[int] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.attempt)
        raise InvalidOrder("order 7 does not exist")

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=5), broker, store)
    assert calls == [1]
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "InvalidOrder: order 7 does not exist"
    assert dead.attempts == 1
    assert "InvalidOrder" in dead.traceback
    assert dead.first_failure_ms == dead.last_failure_ms
    counters = await broker.counters()
    assert counters["failed"] == 1
    assert counters.get("retried", 0) == 0
    assert counters["dead_lettered"] == 1
    await assert_conserved(redis, broker, store, [event_id])


async def test_permanent_error_after_retries_keeps_first_failure(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    calls: list[tuple[int, int]] = []
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        calls.append((event.attempt, now_ms()))
        if event.attempt == 1:
            raise ValueError("transient")
        raise PermanentError("now it is hopeless")

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=5), broker, store)
    dead = (await dead_entries(redis, broker))[event_id]
    assert [a for a, _ in calls] == [1, 2]
    assert dead.attempts == 2
    assert dead.reason == "PermanentError: now it is hopeless"
    assert calls[0][1] <= dead.first_failure_ms <= calls[1][1] <= dead.last_failure_ms


async def test_retry_signal_with_zero_delay_overrides_long_backoff(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # Backoff of up to 1000 s: the burst only ends if Retry(delay=0) is honoured.
    settings = mk(retry_delay=1000.0, retry_max_delay=1000.0)
    attempts: list[int] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt < 3:
            raise Retry(delay=0)

    event_id = await put(broker, "A")
    await burst(app, settings, broker, store)
    assert attempts == [1, 2, 3]
    counters = await broker.counters()
    assert (counters["failed"], counters["retried"], counters["processed"]) == (2, 2, 1)
    await assert_conserved(redis, broker, store, [event_id])


@pytest.mark.parametrize(
    ("delay", "expected_s"),
    [(600, 600), (1e18, 900), (float("inf"), 900), (-5, 0), (float("nan"), None), ("soon", None)],
)
async def test_retry_signal_delay_sets_the_due_time_capped_by_the_max_delay(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore, delay: object, expected_s: float | None
) -> None:
    settings = settings.model_copy(update={"retry_max_delay": 900.0, "retry_delay": 0.01})
    app = EventStream("test")
    tries: list[int] = []  # when each try ran (ms)

    @app.handler("A")
    async def handle(event: Event) -> None:
        tries.append(now_ms())
        if event.attempt == 1:
            raise Retry(delay=delay, reason="rate limited")  # type: ignore[arg-type]

    event_id = await put(broker, "A")
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run())
    try:
        if expected_s:  # the handler's delay, capped at EVENTSTREAM_RETRY_MAX_DELAY
            await wait_until(lambda: _scheduled(redis, broker, event_id), what="the retry to be scheduled")
            due = await redis.zscore(broker.keys.retry, event_id)
            assert due is not None
            assert tries[0] + expected_s * 1000 <= due <= now_ms() + expected_s * 1000
        else:  # no wait (a negative delay), or not a usable delay: the short ordinary backoff
            await wait_until(lambda: len(tries) == 2, what="the second try")
            assert tries[1] - tries[0] < 1_000
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 10)


async def test_retry_signal_still_respects_max_attempts(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        raise Retry(delay=0, reason="not yet")

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=2), broker, store)
    dead = (await dead_entries(redis, broker))[event_id]
    assert dead.reason == "Retry: not yet (gave up after 2 attempts)"
    assert dead.attempts == 2


async def test_per_handler_policy_overrides_settings(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # Settings would retry 10 times after up to 1000 s and allow 30 s per try; the
    # handler says 2 tries, no delay, 0.05 s per try. The burst ends only if all hold.
    settings = mk(max_attempts=10, retry_delay=1000.0, retry_max_delay=1000.0, handler_timeout=30.0)
    attempts: list[int] = []
    defaults: list[int] = []
    app = EventStream("test")

    @app.handler("A", max_attempts=2, retry_delay=0, timeout=0.05)
    async def strict(event: Event) -> None:
        attempts.append(event.attempt)
        await asyncio.sleep(10)

    @app.handler("B")
    async def default_policy(event: Event) -> None:
        defaults.append(event.attempt)
        await asyncio.sleep(0.1)  # far under the settings' 30 s timeout

    a = await put(broker, "A")
    b = await put(broker, "B")
    await burst(app, settings, broker, store)

    assert attempts == [1, 2]
    dead = (await dead_entries(redis, broker))[a]
    assert (
        dead.reason
        == "TimeoutError: handler took longer than its timeout of 0.05s (gave up after 2 attempts)"
    )
    assert defaults == [1]
    assert await assert_conserved(redis, broker, store, [a, b]) == {a: "dlq", b: "store"}


async def test_per_handler_max_attempts_above_settings(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    attempts: list[int] = []
    app = EventStream("test")

    @app.handler("A", max_attempts=4)
    async def handle(event: Event) -> None:
        attempts.append(event.attempt)
        raise ValueError("no")

    event_id = await put(broker, "A")
    await burst(app, mk(max_attempts=1), broker, store)
    assert attempts == [1, 2, 3, 4]
    assert (await dead_entries(redis, broker))[event_id].attempts == 4


async def test_sync_timeout_does_not_block_other_events(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # A hung sync handler keeps its thread; others run on the remaining threads.
    settings = mk(sync_threads=2, max_attempts=1)
    release = threading.Event()
    hanging = threading.Event()
    done: list[str] = []
    app = EventStream("test")

    @app.handler("HANG", timeout=0.1)
    def hang(event: Event) -> None:
        hanging.set()
        release.wait(10)
        hanging.clear()

    @app.handler("OK")
    def ok(event: Event) -> None:
        done.append(event.id)

    hung = await put(broker, "HANG")
    oks = [await put(broker, "OK") for _ in range(5)]
    try:
        await burst(app, settings, broker, store)
        # the burst ended while the hung handler was still inside its thread
        assert hanging.is_set()
    finally:
        release.set()
    assert sorted(done) == sorted(oks)
    places = await assert_conserved(redis, broker, store, [hung, *oks])
    assert places[hung] == "dlq"
