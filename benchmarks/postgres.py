"""A throwaway PostgreSQL database for the drain with the PostgreSQL store (the
production set-up), on the local server: made before the phase, dropped after.

EVENTSTREAM_BENCH_POSTGRES names the server and a database to connect to for that
(default ``postgresql://postgres@127.0.0.1:5432/postgres``: trust authentication).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from sqlalchemy.engine import make_url

ADMIN = os.environ.get("EVENTSTREAM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _execute(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def where() -> str:
    """The server, for notes (no password)."""
    url = make_url(ADMIN)
    return f"{url.host}:{url.port or 5432}"


@contextmanager
def throwaway_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database; raises OSError (or asyncpg's errors)
    when the server cannot be reached."""
    name = f"eventstream_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_execute(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(ADMIN).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
