"""Celery peer (peers venv only): a no-op task on the Redis broker, no result backend.

Worker: ``celery -A app_celery worker --concurrency 1 --pool prefork``.

Celery keeps no per-task completion record without a result backend (and the Redis
transport acks a message when the pool accepts it, before it runs), so the task
counts itself with one INCR: the only peer whose figure includes a counter round trip.
"""

from __future__ import annotations

import functools
import os

from celery import Celery
from redis import Redis

URL = os.environ["PEER_REDIS_URL"]
COUNTER = "peers:celery:done"

app = Celery("app_celery", broker=URL)


@functools.cache
def counter_client() -> Redis:
    """One connection per process (created in the pool child, after the fork)."""
    return Redis.from_url(URL)


@app.task(ignore_result=True)
def noop(n: int) -> None:
    """The drain workload: do nothing, then count the completion."""
    counter_client().incr(COUNTER)


def enqueue(events: int) -> None:
    """Celery has no bulk enqueue: one ``apply_async`` per task, on one reused producer."""
    with app.producer_or_acquire() as producer:
        for i in range(events):
            noop.apply_async((i,), producer=producer)
