"""Run and check the store's Alembic migrations through EventStream's own async engine.

The migration scripts ship inside the package (``versions/`` beside this module), so
an installed EventStream can upgrade its database without any file of the user's.
Alembic is synchronous: each step runs on the async engine's connection through
``run_sync``. Upgrades are serialized across processes: on PostgreSQL by an advisory
lock held for the upgrade's transaction, on SQLite by ``BEGIN IMMEDIATE`` (the write
lock). So an API and several workers starting together on an empty database create
the schema once, and the others find it at head.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from eventstream.errors import SchemaError

VERSION_TABLE = "eventstream_schema_version"
EVENTS_TABLE = "eventstream_events"
SCRIPT_LOCATION = "eventstream.store:migrations"
PG_LOCK_KEY = 0x6576_7374_7265_616D  # "evstream": the advisory lock of schema upgrades


def config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The revision this version of the code needs."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown or malformed id
        return False


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None  # None: no revision recorded
    head: str
    empty: bool  # no revision and no events table: nothing to lose

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        return self.current or "none (no migration applied)"


def _state(conn: sa.Connection) -> SchemaState:
    current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    empty = current is None and not sa.inspect(conn).has_table(EVENTS_TABLE)
    return SchemaState(current, head(), empty)


async def state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as conn:
        return await conn.run_sync(_state)


def _upgrade(conn: sa.Connection, target: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})")
    command.upgrade(config(conn), target)


def _locking_sqlite_engine(engine: AsyncEngine) -> AsyncEngine | None:
    """A one-off engine on the same SQLite file whose transactions take the write lock
    at BEGIN (pysqlite would otherwise run DDL outside any transaction)."""
    if engine.url.database in (None, "", ":memory:"):
        return None
    locking = create_async_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})

    @sa.event.listens_for(locking.sync_engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @sa.event.listens_for(locking.sync_engine, "begin")
    def _begin_immediate(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return locking


@asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Serialize schema work on one SQLite file across processes (a lock file beside it).

    SQLite's own locks are not enough on a brand-new file: switching it to WAL while
    another connection holds the write lock can fail at once with "database is locked"
    (SQLite answers BUSY without waiting when waiting could deadlock).
    """
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    fd = os.open(f"{path}.schema-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def upgrade(engine: AsyncEngine, target: str = "head") -> SchemaState:
    """Apply every migration up to ``target`` in one transaction; a no-op at head."""
    async with _sqlite_file_lock(engine):
        return await _upgrade_locked(engine, target)


async def _upgrade_locked(engine: AsyncEngine, target: str) -> SchemaState:
    locking = _locking_sqlite_engine(engine) if engine.dialect.name == "sqlite" else None
    try:
        async with (locking or engine).begin() as conn:
            await conn.run_sync(_upgrade, target)
    finally:
        if locking is not None:
            await locking.dispose()
    return await state(engine)


async def ensure(engine: AsyncEngine, auto_upgrade: bool) -> SchemaState:
    """Check the schema at start; upgrade it when allowed.

    An empty database is always brought to head (a fresh install needs no extra
    step). A database with a schema that is behind is upgraded only with
    ``auto_upgrade`` (the embedded SQLite store); otherwise starting is refused
    with SchemaError naming the command to run.
    """
    async with _sqlite_file_lock(engine):
        return await _ensure_locked(engine, auto_upgrade)


async def _ensure_locked(engine: AsyncEngine, auto_upgrade: bool) -> SchemaState:
    st = await state(engine)
    if st.up_to_date:
        return st
    if st.current is not None and not known(st.current):
        raise SchemaError(
            f"database schema is at revision {st.current!r}, which this version of EventStream "
            f"does not know (it needs {st.head!r}): was the database upgraded by a newer version?",
            current=st.current,
            needed=st.head,
        )
    if auto_upgrade or st.empty:
        return await _upgrade_locked(engine, "head")
    raise SchemaError(
        f"database schema is at {st.describe()}, this version of EventStream needs {st.head}: "
        "run `eventstream db upgrade`",
        current=st.current,
        needed=st.head,
    )
