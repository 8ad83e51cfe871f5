"""HandlerThreads: the threads that run sync handlers (their timeouts, stuck threads,
cancellation, context, shutdown)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from eventstream.app import EventStream
from eventstream.broker import StreamEntry
from eventstream.event import Envelope, Event, encode_envelope
from eventstream.ingest.accept import now_ms
from eventstream.settings import Settings
from eventstream.worker.dispatch import Dead, Dispatcher, Done
from eventstream.worker.threads import HandlerThreads
from tests.support.waiting import wait_until


def entry() -> StreamEntry:
    env = Envelope(id="ev-1", type="A", payload={}, receivedAt=now_ms())
    return StreamEntry("1-0", "ev-1", 0, None, encode_envelope(env).decode())


def base_settings(**overrides: float) -> Settings:
    return Settings(prefix="threads", **overrides)  # type: ignore[arg-type]


async def occupy(threads: HandlerThreads, release: threading.Event) -> asyncio.Task[object]:
    """A try that holds a thread until ``release`` is set, once it runs."""
    started = threading.Event()

    def block(event: object) -> None:
        started.set()
        release.wait(5)

    busy = asyncio.create_task(threads.run(block, None, 5.0))
    await asyncio.to_thread(started.wait, 5)
    return busy


async def test_a_try_runs_in_a_handler_thread_and_says_how_long_it_ran() -> None:
    threads = HandlerThreads(2)
    seen: list[str] = []

    def handle(event: object) -> None:
        seen.append(threading.current_thread().name)
        time.sleep(0.01)

    try:
        took, error = await threads.run(handle, None, 5.0)
    finally:
        threads.shutdown()
    assert error is None
    assert took >= 0.01
    assert len(seen) == 1
    assert seen[0].startswith("handler-")


@pytest.mark.parametrize(
    "exc", [ValueError("v"), SystemExit(3), KeyboardInterrupt(), StopIteration(), GeneratorExit()]
)
async def test_whatever_a_handler_raises_is_returned_as_its_outcome(exc: BaseException) -> None:
    threads = HandlerThreads(1)

    def handle(event: object) -> None:
        raise exc

    try:
        _, error = await threads.run(handle, None, 5.0)
        assert error is exc
        # the thread lives on and takes the next try
        assert (await threads.run(lambda e: None, None, 5.0))[1] is None
    finally:
        threads.shutdown()


async def test_a_sync_handler_raising_stop_iteration_gets_a_readable_reason() -> None:
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        raise StopIteration("no more")

    dispatcher = Dispatcher(app, base_settings(max_attempts=1))
    try:
        out = await dispatcher.run(entry())
    finally:
        dispatcher.shutdown()
    assert isinstance(out, Dead)
    assert out.reason.startswith("StopIteration: no more")


async def test_the_timeout_starts_when_a_thread_takes_the_try() -> None:
    threads = HandlerThreads(1)
    release = threading.Event()
    try:
        busy = await occupy(threads, release)
        waiting = asyncio.create_task(threads.run(lambda e: None, None, 0.05))
        await asyncio.sleep(0.3)  # six of its timeouts spent waiting for the thread
        assert not waiting.done()
        release.set()
        assert (await waiting)[1] is None
        assert (await busy)[1] is None
    finally:
        release.set()
        threads.shutdown()


async def test_a_stuck_thread_is_replaced_and_counted_until_its_handler_returns() -> None:
    threads = HandlerThreads(1)
    release = threading.Event()

    def hang(event: object) -> None:
        release.wait(10)

    try:
        with pytest.raises(TimeoutError, match=r"longer than its timeout of 0\.05s"):
            await threads.run(hang, None, 0.05)
        assert threads.stuck == 1
        # the one thread is stuck: a fresh one runs the next try
        assert (await asyncio.wait_for(threads.run(lambda e: None, None, 5.0), 5))[1] is None
        release.set()
        await wait_until(lambda: threads.stuck == 0, what="the stuck thread to end")
    finally:
        release.set()
        threads.shutdown()


async def test_a_try_cancelled_while_it_waits_for_a_thread_never_runs() -> None:
    threads = HandlerThreads(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        busy = await occupy(threads, release)
        dropped = asyncio.create_task(threads.run(lambda e: ran.append("dropped"), None, 5.0))
        await asyncio.sleep(0.01)
        dropped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dropped
        release.set()
        await busy
        assert (await threads.run(lambda e: ran.append("next"), None, 5.0))[1] is None
        assert ran == ["next"]
    finally:
        release.set()
        threads.shutdown()


async def test_the_threads_run_tries_side_by_side_up_to_their_number() -> None:
    size = 8
    threads = HandlerThreads(size)
    together = threading.Barrier(size, timeout=10)  # broken unless all 8 run at once
    names: set[str] = set()

    def meet(event: object) -> None:
        names.add(threading.current_thread().name)
        together.wait()

    try:
        results = await asyncio.gather(*(threads.run(meet, None, 30.0) for _ in range(size)))
        assert [error for _, error in results] == [None] * size
        assert len(names) == size
        # a burst of short tries starts no thread beyond the number
        await asyncio.gather(*(threads.run(lambda e: names.add(threading.current_thread().name), None, 5.0)
                               for _ in range(1000)))  # fmt: skip
        assert len(names) == size
    finally:
        threads.shutdown()


async def test_a_try_can_run_in_a_copy_of_the_callers_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    threads = HandlerThreads(1)
    seen: list[str] = []
    var.set("caller's")
    try:
        await threads.run(lambda e: seen.append(var.get()), None, 5.0, context=True)
        await threads.run(lambda e: seen.append(var.get()), None, 5.0)
    finally:
        threads.shutdown()
    assert seen == ["caller's", "unset"]


async def test_shutdown_drops_the_tries_not_started_and_ends_the_threads() -> None:
    threads = HandlerThreads(1, name="shutdown-test")
    release = threading.Event()
    ran: list[str] = []
    busy = await occupy(threads, release)
    queued = asyncio.create_task(threads.run(lambda e: ran.append("queued"), None, 5.0))
    await asyncio.sleep(0.01)
    threads.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()
    await busy
    await wait_until(
        lambda: not any(t.name.startswith("shutdown-test-") for t in threading.enumerate()),
        what="the handler threads to end",
    )
    assert ran == []
    with pytest.raises(RuntimeError, match="shut down"):
        await threads.run(lambda e: None, None, 5.0)


async def test_a_done_sync_try_reports_the_threads_own_duration() -> None:
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        time.sleep(0.02)

    dispatcher = Dispatcher(app, base_settings())
    try:
        out = await dispatcher.run(entry())
    finally:
        dispatcher.shutdown()
    assert isinstance(out, Done)
    assert out.handler_s >= 0.02


async def test_a_thread_that_cannot_start_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = HandlerThreads(1)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", refuse)
            with pytest.raises(RuntimeError, match="can't start new thread"):
                await threads.run(lambda e: None, None, 5.0)
        # the next try starts a thread of its own instead of waiting for one that never ran
        assert (await asyncio.wait_for(threads.run(lambda e: None, None, 5.0), 5))[1] is None
    finally:
        threads.shutdown()


async def test_a_sync_handlers_own_timeout_error_after_a_wait_for_a_thread_keeps_its_reason() -> None:
    """Waiting for a thread is not part of the try: a handler that raises TimeoutError at
    once, after waiting longer than its timeout, is not reported as having run over."""
    app = EventStream("test")
    release = threading.Event()

    @app.handler("HOLD", timeout=5.0)
    def hold(event: Event) -> None:
        release.wait(5)

    @app.handler("A", timeout=0.05)
    def own(event: Event) -> None:
        raise TimeoutError("the upstream API timed out")

    dispatcher = Dispatcher(app, base_settings(sync_threads=1, max_attempts=1))
    held = Envelope(id="ev-2", type="HOLD", payload={}, receivedAt=now_ms())
    try:
        busy = asyncio.create_task(
            dispatcher.run(StreamEntry("2-0", "ev-2", 0, None, encode_envelope(held).decode()))
        )
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(dispatcher.run(entry()))
        await asyncio.sleep(0.2)  # four of its timeouts spent waiting for the one thread
        release.set()
        out = await waiting
        assert isinstance(await busy, Done)
    finally:
        release.set()
        dispatcher.shutdown()
    assert isinstance(out, Dead)
    assert out.reason.startswith("TimeoutError: the upstream API timed out"), out.reason
