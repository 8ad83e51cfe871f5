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

import structlog

from eventstream.settings import Settings

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


async def _serve(settings: Settings, app_spec: str | None, burst: bool) -> bool:
    """Returns whether handlers that would not stop are still running."""
    from eventstream.app import load_app
    from eventstream.backends import open_backends
    from eventstream.heap import freeze_startup_objects
    from eventstream.ops import history, metrics
    from eventstream.ops.retention import run_periodically as run_retention
    from eventstream.tasks import cancel_and_wait
    from eventstream.worker.runner import Worker

    app = load_app(app_spec)
    async with open_backends(settings) as b:
        broker, store = b.broker, b.store
        for warning in await broker.safety_warnings():
            log.warning("redis could lose events", reason=warning)
        w = Worker(app, settings, broker, store)
        w.install_signal_handlers()
        freeze_startup_objects()  # the user's app and every module are loaded: short GC pauses
        pruning = None if burst else asyncio.create_task(run_retention(settings, broker, store, w.consumer))
        # the metrics history, with every other worker and API process (ops/history.py)
        sampling = asyncio.create_task(
            history.run(broker, metrics.worker_ttl_ms(settings)), name=history.TASK_NAME
        )
        try:
            await w.run(burst=burst)
        finally:
            if pruning is not None:
                pruning.cancel()
                await asyncio.gather(pruning, return_exceptions=True)
            if await cancel_and_wait([sampling], 5.0):
                log.warning("the metrics history task did not stop in time")
    return bool(w.stuck or w.dispatcher.stuck_threads)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
