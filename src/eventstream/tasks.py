"""Stopping asyncio tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout_s: float) -> set[asyncio.Task[Any]]:
    """Cancel the tasks and wait for them, cancelling again while any is still running.

    One ``cancel()`` is not always enough: on Python 3.11 ``asyncio.wait_for`` (which
    redis-py uses to send every command) swallows a cancellation that lands just as the
    awaited operation finishes, and the task carries on as if never cancelled. Returns
    the tasks still running after ``timeout_s``.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning
    return pending
