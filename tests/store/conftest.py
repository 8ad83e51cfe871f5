"""SqlStore fixtures beyond the shared ones (``postgres_url``, ``store_url`` and
``sql_store`` are in tests/conftest.py): a URL of an empty database on each backend.

PostgreSQL is the local server (127.0.0.1:5432, user postgres, trust auth); when it
cannot be reached the PostgreSQL cases are skipped with a message, and fail in CI (CI=true).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.servers import pg_execute

BACKENDS = ["sqlite", "postgresql"]


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
    await pg_execute("test", f'CREATE DATABASE "{name}"')
    try:
        yield f"{empty_base.rsplit('/', 1)[0]}/{name}"
    finally:
        await pg_execute("test", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
