"""Operator-command fixtures: a REAL ``eventstream api`` (and burst workers) on the session's Redis.

The commands under test run as real subprocesses (``python -m eventstream ...``,
tests/support/cli.py) against that API over HTTP, exactly as an operator would run them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.factories import Events, post
from tests.support.http import get_metrics
from tests.support.processes import Api, Cluster, api_process


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Api]:
    """The API process; stopped with SIGTERM (exit code 0 asserted) after the test."""
    with api_process(cluster) as a:
        yield a


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30.0) as c:
        yield c


@pytest.fixture
def events(cluster: Cluster, client: httpx.Client) -> Events:
    """3 processed events, 2 refused for good (dead at once), 1 dead after 3 failed tries."""
    made = Events(
        ok=[post(client, "OK", n=i) for i in range(3)],
        perm=[post(client, "PERM", n=i) for i in range(2)],
        fail=[post(client, "FAIL", n=0)],
    )
    worker = cluster.start_worker(burst=True)
    assert cluster.wait_exit(worker) == 0, worker.logs()
    m = get_metrics(client)
    assert (m["processed"], m["dlq"]) == (3, 3), m
    return made
