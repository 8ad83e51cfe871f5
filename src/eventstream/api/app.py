"""The FastAPI application factory and its lifespan (Redis, store, consumer group)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventstream import __version__
from eventstream.api import admin, dlq, events, ops, problems, schemas
from eventstream.api.deps import Services
from eventstream.api.fastpath import IngestFastPath
from eventstream.backpressure import Backpressure
from eventstream.broker import Broker, connect
from eventstream.ingest import GroupCommit
from eventstream.settings import Settings
from eventstream.store import create_store

log = structlog.get_logger("eventstream.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # type: ignore[call-arg]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("EVENTSTREAM_REDIS_URL is not set (`eventstream up` sets it)")
        redis = connect(settings.redis_url, timeout=settings.redis_timeout)
        broker = Broker(redis, settings.keys)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = create_store(settings.store_url)
        await store.create_schema()
        try:
            await broker.ensure_group()
            for warning in await broker.safety_warnings():
                log.warning("redis could lose events", reason=warning)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # Start anyway: /readyz answers 503 and requests 503 until Redis is back.
            # (Ingest creates the stream; workers create the consumer group.)
            log.warning("redis unreachable at start", error=f"{type(exc).__name__}: {exc}")
        app.state.services = Services(
            settings, broker, store, GroupCommit(broker, int(settings.dedupe_window * 1000))
        )
        app.state.backpressure = Backpressure(broker, settings.max_backlog, settings.max_memory_ratio)
        try:
            yield
        finally:
            await store.close()
            await redis.aclose()

    app = FastAPI(
        title="EventStream",
        version=__version__,
        summary="Durable event ingestion and processing on Redis Streams.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.add_middleware(IngestFastPath)
    app.include_router(events.router)
    app.include_router(dlq.router)
    app.include_router(ops.router)
    app.include_router(admin.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.COMPONENTS)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
