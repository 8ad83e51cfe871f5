"""SQLAlchemy Core store of processed events, written in batches."""

from __future__ import annotations

import asyncio
import base64
import builtins
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstream.backend_errors import STORE, translated
from eventstream.errors import ConfigError, ValidationError
from eventstream.store import migrations

metadata = sa.MetaData()

events = sa.Table(
    "eventstream_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("source", sa.String(256)),
    sa.Column("severity", sa.String(32)),
    sa.Column("timestamp", sa.String(64)),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("replay_of", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("received_at_ms", sa.BigInteger, nullable=False),
    sa.Column("processed_at_ms", sa.BigInteger, nullable=False),
    sa.Column("ordering_key", sa.String(256)),  # added by revision 0002, so after the others
    sa.Column("causation_id", sa.String(64)),  # revision 0003: the parent, for a follow-up
    sa.Column("children", sa.Text),  # revision 0003: the follow-ups' ids (JSON list) or NULL
    sa.Index("ix_eventstream_events_processed", "processed_at_ms", "id"),
    sa.Index("ix_eventstream_events_type_processed", "type", "processed_at_ms", "id"),
)


class ProcessedRow(NamedTuple):
    """One stored event, its fields in the table's column order."""

    id: str
    type: str
    payload: str  # JSON text
    source: str | None
    severity: str | None
    timestamp: str | None
    idempotency_key: str | None
    replay_of: str | None
    attempts: int
    received_at_ms: int
    processed_at_ms: int
    ordering_key: str | None = None
    causation_id: str | None = None
    children: str | None = None  # JSON list of the follow-ups' ids, when it emitted any

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


def encode_cursor(processed_at_ms: int, event_id: str) -> str:
    raw = msgspec.json.encode([processed_at_ms, event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# processed_at_ms is a BIGINT: a cursor outside its range is not one this API returned
CursorMs = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, event_id = msgspec.json.decode(raw, type=tuple[CursorMs, str])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise ValidationError(
            "cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}]
        ) from None
    if "\x00" in event_id:  # no stored id has one, and PostgreSQL refuses it in a query
        raise ValidationError(
            "cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}]
        )
    return at, event_id


@translated(STORE)  # callers see EventStream's errors (StoreUnavailable...), never SQLAlchemy's
class SqlStore:
    """Processed events in one SQL table, upserted by id (a repeat keeps one row)."""

    def __init__(self, engine: AsyncEngine, writer: sa.Engine | None = None) -> None:
        """``writer``: a synchronous engine on the same SQLite file, for ``record``."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self._insert_sql, self._insert_order = self._compile_insert()
        self._writer = writer
        self._writer_thread = ThreadPoolExecutor(1, "eventstream-store") if writer else None

    def _compile_insert(self) -> tuple[str, list[int]]:
        """The dialect's INSERT ... ON CONFLICT DO NOTHING, compiled once.

        Rows are then sent as plain tuples through the driver's executemany, which
        skips SQLAlchemy's per-row parameter processing on the hot path.
        """
        stmt: Any
        if self.dialect == "postgresql":
            stmt = postgresql.insert(events).on_conflict_do_nothing(index_elements=["id"])
        elif self.dialect == "sqlite":
            stmt = sqlite.insert(events).on_conflict_do_nothing(index_elements=["id"])
        else:
            stmt = events.insert().prefix_with("IGNORE")
        names = list(ProcessedRow._fields)
        compiled = stmt.compile(dialect=self.engine.dialect, column_keys=names)
        order = compiled.positiontup or names
        return str(compiled), [names.index(name) for name in order]

    async def create_schema(self) -> None:
        """Bring the schema to the code's revision by running the migrations (idempotent)."""
        await migrations.upgrade(self.engine)

    async def ensure_schema(self, auto_upgrade: bool) -> migrations.SchemaState:
        """At start: upgrade an empty database (or any, with ``auto_upgrade``); raise
        SchemaError when the schema is behind and may not be upgraded here."""
        return await migrations.ensure(self.engine, auto_upgrade)

    async def close(self) -> None:
        thread, self._writer_thread = self._writer_thread, None  # a second close: nothing to do
        if self._writer is not None and thread is not None:
            # in the writer's thread: after any write still running there
            await asyncio.get_running_loop().run_in_executor(thread, self._writer.dispose)
            thread.shutdown(wait=False)
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def record(self, rows: list[ProcessedRow]) -> None:
        """Insert rows in one transaction; rows whose id exists are left as they are."""
        if not rows:
            return
        order = self._insert_order
        if order == list(range(len(ProcessedRow._fields))):
            params: list[tuple[Any, ...]] = list(rows)
        else:
            params = [tuple(row[i] for i in order) for row in rows]
        if self._writer_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._insert, params)
            return
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(self._insert_sql, params)

    def _insert(self, params: list[tuple[Any, ...]]) -> None:
        assert self._writer is not None
        with self._writer.begin() as conn:
            conn.exec_driver_sql(self._insert_sql, params)

    async def existing(self, ids: list[str]) -> set[str]:
        """Which of these ids are already recorded as processed."""
        if not ids:
            return set()
        async with self.engine.connect() as conn:
            result = await conn.execute(sa.select(events.c.id).where(events.c.id.in_(ids)))
            return {row[0] for row in result}

    async def get(self, event_id: str) -> ProcessedRow | None:
        if "\x00" in event_id:  # never stored; PostgreSQL refuses NUL in a query
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
        return ProcessedRow(**row._asdict()) if row else None

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one())

    async def list(
        self,
        limit: int,
        cursor: str | None = None,
        type_: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> tuple[list[ProcessedRow], str | None]:
        """Newest first by processing time, keyset-paged by (processed_at_ms, id)."""
        query = self.list_query(limit, cursor, type_, since_ms, until_ms)
        async with self.engine.connect() as conn:
            rows = [ProcessedRow(**r._asdict()) for r in await conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = encode_cursor(rows[-1].processed_at_ms, rows[-1].id) if more and rows else None
        return rows, nxt

    def list_query(
        self,
        limit: int,
        cursor: str | None = None,
        type_: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> Any:
        """One page, newest first, and one row more to tell whether another page follows."""
        query = self._filtered(sa.select(events), type_, since_ms, until_ms)
        if cursor:
            at, last_id = decode_cursor(cursor)
            query = query.where(
                sa.or_(
                    events.c.processed_at_ms < at,
                    sa.and_(events.c.processed_at_ms == at, events.c.id < last_id),
                )
            )
        return query.order_by(events.c.processed_at_ms.desc(), events.c.id.desc()).limit(limit + 1)

    def _filtered(self, query: Any, type_: str | None, since_ms: int | None, until_ms: int | None) -> Any:
        if type_ is not None:
            query = query.where(events.c.type == type_)
        if since_ms is not None:
            query = query.where(events.c.processed_at_ms >= since_ms)
        if until_ms is not None:
            query = query.where(events.c.processed_at_ms < until_ms)
        return query

    def scan_query(
        self,
        limit: int,
        after: tuple[int, str] | None = None,
        type_: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> Any:
        """Oldest first by processing time, strictly after ``after`` = (processed_at_ms, id)."""
        query = self._filtered(sa.select(events), type_, since_ms, until_ms)
        if after is not None:
            at, last_id = after
            query = query.where(
                sa.or_(
                    events.c.processed_at_ms > at,
                    sa.and_(events.c.processed_at_ms == at, events.c.id > last_id),
                )
            )
        return query.order_by(events.c.processed_at_ms, events.c.id).limit(limit)

    async def scan(
        self,
        limit: int,
        after: tuple[int, str] | None = None,
        type_: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> builtins.list[ProcessedRow]:
        """Keyset-paged, oldest first: what replay from history walks through."""
        query = self.scan_query(limit, after, type_, since_ms, until_ms)
        async with self.engine.connect() as conn:
            return [ProcessedRow(**r._asdict()) for r in await conn.execute(query)]

    async def count_matching(
        self, type_: str | None = None, since_ms: int | None = None, until_ms: int | None = None
    ) -> int:
        query = self._filtered(sa.select(sa.func.count()).select_from(events), type_, since_ms, until_ms)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def get_many(self, ids: builtins.list[str]) -> dict[str, ProcessedRow]:
        ids = [i for i in ids if "\x00" not in i]
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            result = await conn.execute(sa.select(events).where(events.c.id.in_(ids)))
            return {r.id: ProcessedRow(**r._asdict()) for r in result}

    def prune_query(self, cutoff_ms: int, batch: int) -> Any:
        """Delete one batch of rows processed before ``cutoff_ms``, oldest first, in one
        statement: the batch is chosen by the subquery (through the processed_at_ms index)
        and deleted by primary key. One statement, so SQLite takes the write lock at once
        instead of upgrading a read, and no parameter per id."""
        chosen = (
            sa.select(events.c.id)
            .where(events.c.processed_at_ms < cutoff_ms)
            .order_by(events.c.processed_at_ms, events.c.id)
            .limit(batch)
        )
        return sa.delete(events).where(events.c.id.in_(chosen.scalar_subquery()))

    async def prune_batch(self, cutoff_ms: int, batch: int) -> int:
        """Delete up to ``batch`` rows processed before ``cutoff_ms`` in one short
        transaction; returns how many went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(self.prune_query(cutoff_ms, batch))
            return int(result.rowcount)


def create_store(url: str) -> SqlStore:
    """A store for a SQLAlchemy async URL. SQLite runs in WAL mode."""
    writer = None
    try:
        if url.startswith("sqlite"):
            engine = create_async_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            if engine.url.database not in (None, "", ":memory:"):
                # The store rows are written through the standard library's driver in a
                # thread of their own: one hop per transaction, where aiosqlite makes
                # several (a small transaction costs a quarter of the CPU).
                writer = sa.create_engine(
                    engine.url.set(drivername="sqlite"),
                    connect_args={"timeout": 30, "check_same_thread": False},
                )
                sa.event.listen(writer, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (ImportError, sa.exc.ArgumentError, sa.exc.InvalidRequestError, ValueError) as exc:
        raise ConfigError(f"cannot use database URL {_without_password(url)!r}: {exc}") from exc
    return SqlStore(engine, writer)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _without_password(url: str) -> str:
    """The URL as an error may show it: the password (a managed database's) masked."""
    return re.sub(r"(://[^/?#@:]*:)[^/?#@]*@", r"\1***@", url)
