"""Outage tests: real api and worker processes against a PRIVATE Redis per test.

These tests kill, pause and stop Redis, so each one starts its own server with
EmbeddedRedis in tmp_path (``appendfsync always``, DEBUG enabled) and never touches
the session's shared one. Processes are started through the end-to-end harness
(tests/support/processes.py); what clients were told is checked against what became
of it with tests/support/outcomes.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstream.embedded import EmbeddedRedis, find_server_binary
from tests.support.processes import Cluster, processes
from tests.support.servers import NO_REDIS, missing, start_private_redis


@pytest.fixture
def private_redis(tmp_path: Path) -> EmbeddedRedis:
    """This test's own server (killed in the ``cluster`` teardown)."""
    if find_server_binary() is None:
        missing(NO_REDIS)
    return start_private_redis(tmp_path / "redis")


@pytest.fixture
def cluster(private_redis: EmbeddedRedis, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    try:
        with processes(private_redis.url, prefix, tmp_path) as c:
            yield c
    finally:
        # a test may have stopped the server (SIGSTOP) or replaced it: the test's
        # teardown of its own servers runs first; this stops the fixture's one
        proc = private_redis.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
        private_redis.kill()
