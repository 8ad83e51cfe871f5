"""RQ peer (peers venv only): a no-op function.

Worker: ``rq worker --burst`` (default class rq.Worker, which forks a work horse per
job), and, as a separate labelled row, ``rq worker --burst --worker-class rq.SimpleWorker``.
"""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue


def noop(n: int) -> None:
    """The drain workload: do nothing."""


def enqueue(events: int, chunk: int = 1000) -> None:
    """RQ's bulk API: ``Queue.enqueue_many``, one pipeline per `chunk` jobs."""
    redis = Redis.from_url(os.environ["PEER_REDIS_URL"])
    queue = Queue("default", connection=redis)
    for start in range(0, events, chunk):
        stop = min(events, start + chunk)
        queue.enqueue_many([Queue.prepare_data(noop, (i,)) for i in range(start, stop)])
    redis.close()
