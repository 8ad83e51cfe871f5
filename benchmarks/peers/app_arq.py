"""arq peer (peers venv only): a no-op coroutine.

Worker: ``arq app_arq.WorkerSettings`` (arq's defaults: max_jobs=10, poll_delay=0.5 s);
``arq app_arq.FastPollWorkerSettings`` is the labelled poll_delay=0.01 s variant.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

REDIS = RedisSettings.from_dsn(os.environ["PEER_REDIS_URL"])


async def noop(ctx: dict[str, Any], n: int) -> None:
    """The drain workload: do nothing."""


class WorkerSettings:
    functions = [noop]
    redis_settings = REDIS


class FastPollWorkerSettings:
    """Not arq's default: poll every 10 ms instead of 0.5 s (a separate, labelled row).

    arq reads a settings class's own ``__dict__``, so nothing is inherited.
    """

    functions = [noop]
    redis_settings = REDIS
    poll_delay = 0.01


async def _enqueue(events: int, concurrency: int = 200) -> None:
    pool = await create_pool(REDIS)
    try:
        # arq has no bulk enqueue; enqueue_job (a WATCH/MULTI transaction) is awaited
        # `concurrency` at a time over the pool's connections.
        for start in range(0, events, concurrency):
            stop = min(events, start + concurrency)
            await asyncio.gather(*(pool.enqueue_job("noop", i) for i in range(start, stop)))
    finally:
        await pool.aclose()


def enqueue(events: int) -> None:
    asyncio.run(_enqueue(events))
