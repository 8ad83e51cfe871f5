"""The FastAPI application factory and its lifespan (Redis, store, consumer group)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from eventstream.api import (
    admin,
    dlq,
    docs,
    events,
    keys,
    ops,
    problems,
    query,
    replay,
    schemas,
    security,
    ui,
)
from eventstream.api.deps import Services
from eventstream.api.fastpath import IngestFastPath
from eventstream.api.guard import IngestRefusals, SecurityMiddleware
from eventstream.auth.guard import Guard
from eventstream.backends import Backends, open_backends
from eventstream.errors import RedisUnavailable
from eventstream.heap import freeze_startup_objects
from eventstream.ingest.accept import GroupCommit
from eventstream.ingest.backpressure import Backpressure
from eventstream.ops import history
from eventstream.settings import Settings
from eventstream.tasks import cancel_and_wait
from eventstream.version import __version__

log = structlog.get_logger("eventstream.api")

STOP_TASK_S = 5.0


class EventStreamAPI(FastAPI):
    """FastAPI, with the ingest routes' requests answered by ``fast_path``
    (eventstream.api.fastpath) before its middleware stack."""

    fast_path: IngestFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and (endpoint := fast.endpoint(scope)) is not None:
            scope["app"] = self  # what the middleware stack sets: Request.app
            await fast(endpoint, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, loopback: bool = False, insecure: bool = False
) -> EventStreamAPI:
    """The app. ``loopback``: it listens on a loopback address only, so without any API
    key anonymous requests are accepted; ``insecure`` accepts them on any address. By
    default neither: every request but the open ones needs a key (``uvicorn --factory``
    cannot tell where it listens)."""
    settings = settings or Settings()  # type: ignore[call-arg]
    guard = Guard(settings, loopback=loopback, insecure=insecure)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            try:
                backends = await stack.enter_async_context(open_backends(settings))
            except BaseException as exc:
                log.error("cannot start", error=str(exc))
                raise
            await _start(app, backends, guard)
            # the metrics history, with every other API and worker process (ops/history.py)
            stack.push_async_callback(_stop, history.start(backends.broker, settings))
            yield

    app = EventStreamAPI(
        title="EventStream",
        version=__version__,
        summary="Durable event ingestion and processing on Redis Streams.",
        lifespan=lifespan,
        docs_url=None,  # docs.install: the pages and every file they load, served here (no CDN)
        redoc_url=None,
        dependencies=[Depends(query.refuse_unknown)],  # 422 for unknown query parameters
    )
    problems.install(app)
    docs.install(app)
    app.add_middleware(SecurityMiddleware, guard=guard)
    security.install_cors(app, settings.cors_origins)
    app.add_middleware(security.SecurityHeaders)  # every answer gets the headers
    app.state.ingest_refused = {}
    app.add_middleware(IngestRefusals, counts=app.state.ingest_refused)  # outermost: sees every answer
    # POST /events and /events/batch: ahead of the stack, doing what it does for them
    cors = bool(security.cors_origins(settings.cors_origins))
    app.fast_path = IngestFastPath(guard, app.state.ingest_refused, cors)
    app.include_router(events.router)
    app.include_router(dlq.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(replay.router)
    app.include_router(keys.router)
    ui.install(app)  # /ui: the dashboard, behind its own session checks with the same guard
    app.state.guard = guard

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.COMPONENTS)
            doc["components"]["schemas"].update(keys.COMPONENTS)
            security.document(doc, settings.metrics_public)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _start(app: FastAPI, backends: Backends, guard: Guard) -> None:
    """Everything the routes use, on open backends."""
    settings, broker, store = backends.settings, backends.broker, backends.store
    try:
        await broker.ensure_group()
        for warning in await broker.safety_warnings():
            log.warning("redis could lose events", reason=warning)
    except RedisUnavailable as exc:
        # Start anyway: /readyz answers 503 and requests 503 until Redis is back.
        # (Ingest creates the stream; workers create the consumer group.)
        log.warning("redis unreachable at start", error=str(exc))
    app.state.services = Services(
        settings,
        broker,
        store,
        GroupCommit(broker, int(settings.dedupe_window * 1000)),
        Backpressure(broker, settings.max_backlog, settings.max_memory_ratio),
    )
    if settings.tracing:
        from eventstream.ingest.tracing import IngestTracing

        app.state.services.tracing = IngestTracing(settings, app.state.services.ingest)
    guard.bind(broker)
    await _announce(guard)
    freeze_startup_objects()  # after start-up: short GC pauses from now on


async def _stop(task: asyncio.Task[None]) -> None:
    if await cancel_and_wait([task], STOP_TASK_S):
        log.warning("a background task did not stop in time", task=task.get_name())


async def _announce(guard: Guard) -> None:
    """Say at start whether requests need a key."""
    assert guard.registry is not None
    try:
        keys_exist = await guard.registry.any_keys()
    except RedisUnavailable:
        return
    if keys_exist:
        log.info(
            "API keys required: every request needs one but /healthz, /readyz, /openapi.json and the docs"
        )
    elif guard.loopback:
        log.warning(
            "no API keys exist: anonymous requests are accepted because the API listens on "
            "loopback only; create one with `eventstream keys create` to require keys"
        )
    else:
        log.warning(
            "no API keys exist and --insecure is set: anonymous requests are accepted from "
            "any address; create one with `eventstream keys create` to require keys"
        )
