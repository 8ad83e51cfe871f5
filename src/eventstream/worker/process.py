"""One worker process: connect, check, run the worker and retention, close, exit.

A handler that ignored its cancellation, or a sync handler stuck in its thread, would
keep an ordinary interpreter exit waiting forever (the event loop's cleanup awaits
every task, and the interpreter joins every thread). Their tries are recorded already,
so once everything is closed the process exits without waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import structlog

from eventstream.settings import Settings
from eventstream.tasks import cancel_and_wait

log = structlog.get_logger("eventstream.worker")


def run(settings: Settings, app_spec: str | None, burst: bool) -> None:
    """Run a worker until it is stopped (SIGINT / SIGTERM) or, with ``burst``, idle."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        stuck = runner.run(_serve(settings, app_spec, burst))
        if stuck:
            _exit_now(0)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


CLOSE_TIMEOUT_S = 15.0
"""How long a stopped worker waits for its background tasks and its connections to close."""


async def _serve(settings: Settings, app_spec: str | None, burst: bool) -> bool:
    """Returns whether the process must exit without waiting: handlers that would not stop
    are still running, or closing took longer than :data:`CLOSE_TIMEOUT_S`."""
    from eventstream.app import load_app
    from eventstream.backends import open_backends
    from eventstream.heap import freeze_startup_objects
    from eventstream.ops import history, metrics
    from eventstream.ops.retention import run_periodically as run_retention
    from eventstream.worker.runner import Worker

    app = load_app(app_spec)
    closing = contextlib.AsyncExitStack()
    b = await closing.enter_async_context(open_backends(settings))
    try:
        broker, store = b.broker, b.store
        for warning in await broker.safety_warnings():
            log.warning("redis could lose events", reason=warning)
        w = Worker(app, settings, broker, store)
        w.install_signal_handlers()
        freeze_startup_objects()  # the user's app and every module are loaded: short GC pauses
        if not burst:
            pruning = asyncio.create_task(run_retention(settings, broker, store, w.consumer))
            closing.push_async_callback(_cancel, pruning)
        # the metrics history, with every other worker and API process (ops/history.py)
        sampling = asyncio.create_task(
            history.run(broker, metrics.worker_ttl_ms(settings)), name=history.TASK_NAME
        )
        closing.push_async_callback(_cancel, sampling)
        await w.run(burst=burst)
    finally:
        closed = await close_within(closing, CLOSE_TIMEOUT_S)
    return bool(not closed or w.stuck or w.dispatcher.stuck_threads)


async def _cancel(task: asyncio.Task[Any]) -> None:
    if await cancel_and_wait([task], 5.0):
        log.warning("a background task did not stop in time", task=task.get_name())


async def close_within(closing: contextlib.AsyncExitStack, timeout_s: float) -> bool:
    """Close what ``closing`` holds; whether it closed within ``timeout_s``.

    Every event's outcome is recorded before this runs, so a close that hangs (a connection
    whose peer went away mid-failover, a lock a topology refresh still holds) must not keep
    the process alive: it is given up, and the caller exits without waiting.
    """
    closer = asyncio.ensure_future(closing.aclose())
    done, _ = await asyncio.wait({closer}, timeout=timeout_s)
    if not done:  # not cancelled: a cancelled close step would let the next one hang unbounded
        log.warning("closing the connections took too long; exiting without waiting", timeout_s=timeout_s)
        return False
    closer.result()
    return True


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
