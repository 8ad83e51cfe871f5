"""SqlStore fixtures: a SQLite file per test, and a throwaway PostgreSQL database per session.

PostgreSQL is the local server (127.0.0.1:5432, user postgres, trust auth); the
session creates its own database from the existing ``test`` database and drops it at
the end. When the server cannot be reached the PostgreSQL cases are skipped with a
message, and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from eventstream.store import SqlStore, create_store
from tests.conftest import missing

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
BACKENDS = ["sqlite", "postgresql"]


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(**PG, database="test", timeout=5)


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    name = f"eventstream_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        conn = await _admin()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {PG['host']}:{PG['port']} (database 'test') is unreachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        conn = await _admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def sql_store(store_url: str) -> AsyncIterator[SqlStore]:
    """An empty store on the backend of the test's parameter."""
    store = create_store(store_url)
    await store.create_schema()
    if store.dialect == "postgresql":
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql("TRUNCATE eventstream_events")
    yield store
    await store.close()


@pytest.fixture(params=BACKENDS)
def empty_base(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def empty_url(empty_base: str) -> AsyncIterator[str]:
    """A URL of a database with nothing in it: a new SQLite file, or a new PostgreSQL database."""
    if empty_base.startswith("sqlite"):
        yield empty_base
        return
    name = f"{empty_base.rsplit('/', 1)[1]}_{uuid.uuid4().hex[:8]}"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{empty_base.rsplit('/', 1)[0]}/{name}"
    finally:
        conn = await _admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
