"""Deployment fixtures: the e2e process harness, and a throwaway PostgreSQL database.

PostgreSQL is the local server (127.0.0.1:5432, user postgres, trust auth); each test
that asks for ``postgres_db`` gets a database of its own, dropped afterwards. When the
server cannot be reached those tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.conftest import missing
from tests.e2e.conftest import cluster as cluster  # the e2e fixtures: real processes
from tests.e2e.conftest import pytest_runtest_makereport as pytest_runtest_makereport

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(**PG, database="postgres", timeout=5)


async def _sql(statement: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """The name of a fresh, empty database."""
    name = f"eventstream_deploy_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_sql(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {PG['host']}:{PG['port']} is unreachable: {exc}")
    try:
        yield name
    finally:
        asyncio.run(_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
