"""Dispatcher: the outcome of one delivery, without Redis (backoff bounds, policy, classification)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eventstream.app import EventStream
from eventstream.broker import StreamEntry
from eventstream.errors import PermanentError, Retry
from eventstream.event import Envelope, Event, encode_envelope
from eventstream.ingest.accept import now_ms
from eventstream.settings import Settings
from eventstream.worker.dispatch import Dead, Dispatcher, Done, Outcome, RetryLater


def entry(type_: str = "A", attempts: int = 0, first_failure_ms: int | None = None) -> StreamEntry:
    env = Envelope(id="ev-1", type=type_, payload={"k": 1}, receivedAt=now_ms())
    return StreamEntry("1-0", "ev-1", attempts, first_failure_ms, encode_envelope(env).decode())


def failing_app(exc: BaseException, **policy: float | int) -> EventStream:
    app = EventStream("test")

    @app.handler("A", **policy)  # type: ignore[arg-type]
    async def handle(event: Event) -> None:
        raise exc

    return app


def base_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"prefix": "dispatch", "retry_delay": 1.0, "retry_max_delay": 10.0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def run_one(app: EventStream, settings: Settings, d: StreamEntry) -> Outcome:
    dispatcher = Dispatcher(app, settings)
    try:
        return await dispatcher.run(d)
    finally:
        dispatcher.shutdown()


@pytest.mark.parametrize("made_before", [0, 1, 2, 3, 4, 5, 10, 200])
async def test_backoff_due_time_is_within_the_exponential_ceiling(made_before: int) -> None:
    settings = base_settings(max_attempts=1000)
    app = failing_app(ValueError("x"))
    ceiling_ms = min(10_000, 1000 * 2**made_before)  # attempt made_before+1 just failed
    dues = []
    for _ in range(20):
        before = now_ms()
        out = await run_one(app, settings, entry(attempts=made_before, first_failure_ms=123))
        after = now_ms()
        assert isinstance(out, RetryLater)
        assert out.attempts == made_before + 1
        assert out.first_failure_ms == 123
        assert out.reason == "ValueError: x"
        assert before <= out.due_ms <= after + ceiling_ms
        dues.append(out.due_ms - before)
    # full jitter: not a constant delay (20 draws from [0, ceiling] all equal is ~impossible)
    assert len(set(dues)) > 1


async def test_first_failure_is_taken_from_the_delivery() -> None:
    out = await run_one(failing_app(ValueError()), base_settings(), entry(attempts=2, first_failure_ms=42))
    assert isinstance(out, RetryLater)
    assert out.first_failure_ms == 42
    out = await run_one(failing_app(ValueError()), base_settings(), entry())
    assert isinstance(out, RetryLater)
    assert now_ms() - 1000 < out.first_failure_ms <= now_ms()


async def test_handler_retry_delay_overrides_settings() -> None:
    settings = base_settings(retry_delay=100.0, retry_max_delay=1000.0)
    app = failing_app(ValueError("x"), retry_delay=0.05)
    for _ in range(10):
        before = now_ms()
        out = await run_one(app, settings, entry())
        assert isinstance(out, RetryLater)
        assert before <= out.due_ms <= now_ms() + 50


async def test_retry_signal_delay_is_exact_and_never_negative() -> None:
    settings = base_settings()
    before = now_ms()
    out = await run_one(failing_app(Retry(delay=7.5)), settings, entry())
    assert isinstance(out, RetryLater)
    assert before + 7500 <= out.due_ms <= now_ms() + 7500
    assert out.reason == "Retry: retry requested"
    before = now_ms()
    out = await run_one(failing_app(Retry(delay=-3)), settings, entry())
    assert isinstance(out, RetryLater)
    assert before <= out.due_ms <= now_ms()


async def test_retry_signal_without_delay_uses_backoff() -> None:
    settings = base_settings(retry_delay=2.0, retry_max_delay=2.0)
    before = now_ms()
    out = await run_one(failing_app(Retry()), settings, entry())
    assert isinstance(out, RetryLater)
    assert before <= out.due_ms <= now_ms() + 2000


async def test_last_attempt_is_dead() -> None:
    out = await run_one(
        failing_app(ValueError("x")),
        base_settings(max_attempts=3),
        entry(attempts=2, first_failure_ms=5),
    )
    assert isinstance(out, Dead)
    assert out.attempts == 3
    assert out.first_failure_ms == 5
    assert out.handler_ran
    assert out.reason == "ValueError: x (gave up after 3 attempts)"


async def test_permanent_error_is_dead_at_once() -> None:
    out = await run_one(failing_app(PermanentError("no")), base_settings(max_attempts=9), entry())
    assert isinstance(out, Dead)
    assert out.attempts == 1
    assert out.reason == "PermanentError: no"


async def test_success_reports_attempt_and_duration() -> None:
    app = EventStream("test")
    seen: list[Event] = []

    @app.handler("A")
    def handle(event: Event) -> None:
        seen.append(event)

    out = await run_one(app, base_settings(), entry(attempts=3))
    assert isinstance(out, Done)
    assert out.attempt == 4
    assert seen[0].attempt == 4
    assert seen[0].payload == {"k": 1}
    assert out.handler_s >= 0
    assert not out.skipped


async def test_no_handler_and_malformed_do_not_count_as_attempts() -> None:
    app = EventStream("test")
    out = await run_one(app, base_settings(), entry(attempts=2, first_failure_ms=9))
    assert isinstance(out, Dead)
    assert out.attempts == 2
    assert not out.handler_ran
    assert out.first_failure_ms == 9
    assert out.reason.startswith("NoHandler: ")

    bad = StreamEntry("1-0", "ev-2", 0, None, '{"id": 1}')
    out = await run_one(app, base_settings(), bad)
    assert isinstance(out, Dead)
    assert not out.handler_ran
    assert out.reason.startswith("MalformedEvent: ")


async def test_a_thread_stuck_past_its_timeout_is_replaced_by_a_fresh_one() -> None:
    # Two threads. A thread cannot be stopped: a handler that hangs past its timeout
    # keeps it, so a fresh thread takes its place, or a few stuck handlers would leave
    # no thread for any other event.
    release = threading.Event()
    short_ran = threading.Event()
    app = EventStream("test")

    @app.handler("HANG", timeout=0.05)
    def hang(event: Event) -> None:
        release.wait(10)

    @app.handler("A", timeout=5.0)
    def quick(event: Event) -> None:
        return None

    @app.handler("SHORT", timeout=0.05)
    def short(event: Event) -> None:
        short_ran.set()

    dispatcher = Dispatcher(app, base_settings(sync_threads=2, max_attempts=1))
    try:
        hung = await dispatcher.run(entry("HANG"))
        assert isinstance(hung, Dead)
        assert hung.reason.startswith("TimeoutError: handler took longer than its timeout of 0.05s")
        # one thread left: handlers take turns on it
        outs = await asyncio.gather(*(dispatcher.run(entry("A")) for _ in range(3)))
        assert all(isinstance(o, Done) for o in outs), outs
        # with both original threads stuck, a short-timeout handler still runs at once
        assert isinstance(await dispatcher.run(entry("HANG")), Dead)
        assert dispatcher.stuck_threads == 2
        assert isinstance(await asyncio.wait_for(dispatcher.run(entry("SHORT")), 5), Done)
        assert short_ran.is_set()
        outs = await asyncio.gather(*(dispatcher.run(entry("A")) for _ in range(4)))
        assert all(isinstance(o, Done) for o in outs), outs
    finally:
        release.set()
        dispatcher.shutdown()
