"""End-to-end fixtures: REAL ``eventstream`` processes against the session's private Redis.

``cluster`` (tests/conftest.py) hands a test a harness (tests/support/processes.py);
``api`` is an API process on it and ``client`` an HTTP client for that API.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

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
