"""One way to open the backends: Redis and the store, the schema checked, both closed.

The API, the worker and the operator commands all open their deployment here::

    async with open_backends(settings) as b:
        await b.broker...; await b.store...

A command that needs one of the two opens it alone, the same way: ``open_broker``
(the API-key commands and checks), ``open_store`` (the ``db`` commands).

Redis is reached with the settings of a managed service, here and nowhere else:
``redis_options`` turns the ACL user and password and the TLS files into redis-py's
options. PostgreSQL's TLS rides in the database URL (asyncpg's ``ssl`` parameter).

The embedded SQLite store upgrades its own schema; a configured database
(``EVENTSTREAM_DATABASE_URL``) is upgraded only when it is empty, else checked and
refused when behind (``eventstream db upgrade`` migrates it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from eventstream.errors import ConfigError
from eventstream.settings import Settings

log = structlog.get_logger("eventstream.backends")

if TYPE_CHECKING:
    from eventstream.broker import Broker
    from eventstream.store import SqlStore


@dataclass(frozen=True, slots=True)
class Backends:
    settings: Settings
    broker: Broker  # the one door to Redis: the client itself stays inside it
    store: SqlStore


@asynccontextmanager
async def open_broker(settings: Settings, redis_url: str | None = None) -> AsyncIterator[Broker]:
    """The broker on Redis at ``redis_url`` (default: the settings'), closed on leaving."""
    broker = await connect_broker(settings, redis_url)
    try:
        yield broker
    finally:
        await broker.aclose()


async def connect_broker(settings: Settings, redis_url: str | None = None) -> Broker:
    """The broker on Redis at ``redis_url`` (default: the settings'); the caller closes it
    (``await broker.aclose()``)."""
    from eventstream.broker import Broker, Durability, Layout, connect

    url = redis_url or settings.redis_url
    if not url:
        raise ConfigError("EVENTSTREAM_REDIS_URL is not set (`eventstream up` sets it)")
    redis = await connect(url, timeout=settings.redis_timeout, **redis_options(settings, url))
    durability = None
    if settings.redis_wait_replicas or settings.redis_wait_aof:
        timeout_ms = max(1, int(settings.redis_wait_timeout * 1000))
        durability = Durability(settings.redis_wait_replicas, timeout_ms, settings.redis_wait_aof)
    return Broker(redis, Layout(settings.prefix, settings.partitions), durability)


def redis_options(settings: Settings, url: str) -> dict[str, Any]:
    """redis-py's connection options for ``url`` from the credential and TLS settings.

    A rediss:// connection always verifies the server: its certificate chain (against
    the CA file, else the system's CAs) and its host name."""
    problem = settings.redis_url_problem(url)
    if problem:
        raise ConfigError(problem)
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if url.startswith("rediss://"):
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.redis_tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
        if settings.redis_tls_cert_file is not None and settings.redis_tls_key_file is not None:
            options["ssl_certfile"] = str(settings.redis_tls_cert_file)
            options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return options


@asynccontextmanager
async def open_store(settings: Settings, *, check_schema: bool = True) -> AsyncIterator[SqlStore]:
    """The store, its schema checked (``check_schema=False`` for the commands that migrate
    it), closed on leaving."""
    from eventstream.store import create_store

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = create_store(settings.store_url)
    try:
        if check_schema:
            await store.ensure_schema(auto_upgrade=settings.database_url is None)
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_backends(settings: Settings, redis_url: str | None = None) -> AsyncIterator[Backends]:
    """Redis at ``redis_url`` (default: the settings'), its partition count checked (see
    Broker.claim_partitions), and the store, its schema checked."""
    from eventstream.errors import BackendUnavailable

    async with open_broker(settings, redis_url) as broker, open_store(settings) as store:
        try:
            await broker.claim_partitions()
        except BackendUnavailable as exc:  # the API starts without Redis and answers 503
            log.warning("cannot check the partition count yet; it is checked before the first "
                        "event is accepted or read", error=str(exc))  # fmt: skip
        yield Backends(settings, broker, store)
