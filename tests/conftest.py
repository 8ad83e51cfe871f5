"""The fixtures more than one directory shares: a private real Redis per test session
(and a private Redis Cluster for the tests that ask for one), a key prefix per test,
the in-process app, PostgreSQL databases, the process harness.

The server is started through ``eventstream.embedded`` (the same code ``eventstream up``
uses) on a free port, so tests never touch another Redis and never flush anything:
each test gets its own key prefix. When no server binary is installed the tests
are skipped locally with a message, and fail in CI (CI=true). The helpers behind
these fixtures are in tests/support.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from eventstream.broker import Broker, Keys, connect
from eventstream.embedded import EmbeddedRedis, find_server_binary
from eventstream.settings import Settings
from eventstream.store import SqlStore, create_store
from tests.support.asgi import Api, MakeApi, running
from tests.support.cluster import LocalCluster
from tests.support.factories import make_settings
from tests.support.processes import Cluster, processes
from tests.support.servers import NO_REDIS, PG, missing, pg_connect, pg_execute


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    if find_server_binary() is None:
        missing(NO_REDIS)
    server = EmbeddedRedis(
        tmp_path_factory.mktemp("redis"),
        fsync="always",
        extra_args=["--enable-debug-command", "local"],
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private Redis Cluster (3 primaries, 3 replicas) for the session; keep it whole:
    a test that kills nodes starts a cluster of its own."""
    if find_server_binary() is None:
        missing(NO_REDIS)
    with LocalCluster(tmp_path_factory.mktemp("redis-cluster")) as c:
        yield c


@pytest.fixture(params=["server", "cluster"])
async def server_or_cluster(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Any]:
    """A client of the session's server, then of its Redis Cluster: a test that takes it
    runs on both."""
    url = redis_url if request.param == "server" else request.getfixturevalue("redis_cluster").url
    client = await connect(url)
    assert isinstance(client, RedisCluster) == (request.param == "cluster")
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, prefix, tmp_path)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = await connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def broker(redis: Redis, settings: Settings) -> Broker:
    b = Broker(redis, Keys(settings.prefix))
    await b.ensure_group()
    return b


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = create_store(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    await s.create_schema()
    yield s
    await s.close()


# ---- the real app in-process (tests/api, history, retention, cli) ----------------------


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """The real app (over ASGI) on the test's ``settings``."""
    async with running(settings) as a:
        yield a


@pytest.fixture
async def make_api(redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[MakeApi]:
    """An app on the test's prefix with some settings changed: ``await make_api(max_batch=3)``."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Api:
            return await stack.enter_async_context(
                running(make_settings(redis_url, prefix, tmp_path, **overrides))
            )

        yield make


# ---- PostgreSQL (tests/store, history, retention, deploy, outages) ------------------------


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of this session's own, made from the existing ``test`` database."""
    name = f"eventstream_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        conn = await pg_connect("test")
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {PG['host']}:{PG['port']} (database 'test') is unreachable: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        await pg_execute("test", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
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


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """The name of a fresh, empty database, dropped afterwards."""
    name = f"eventstream_deploy_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(pg_execute("postgres", f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        missing(f"PostgreSQL at {PG['host']}:{PG['port']} is unreachable: {exc}")
    try:
        yield name
    finally:
        asyncio.run(pg_execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---- real processes (tests/e2e, cli, deploy, faults, observability) ----------------------


@pytest.fixture
def cluster(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    """Real ``eventstream`` processes on the session's Redis; every one left is killed after."""
    with processes(redis_url, prefix, tmp_path) as c:
        yield c


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the stderr/stdout of every process the test's ``cluster`` started."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for proc in cluster.procs:
            report.sections.append((f"process {proc.name}", proc.logs()))
    return report
