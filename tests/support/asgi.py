"""The real app (create_app) inside its lifespan, driven in-process over ASGI by httpx.

``running(settings)`` yields an :class:`Api`: the app, a client for it, its services,
and helpers to post events, run a burst worker on the same Redis keys and store, and
read counters. ``assert_problem`` checks an RFC 9457 problem answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from eventstream.api import create_app
from eventstream.api.deps import Services
from eventstream.app import EventStream
from eventstream.broker import Broker, connect
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.factories import failing_app, recording_app
from tests.support.workers import run_burst

PROBLEM = "application/problem+json"


class Api:
    """One running app and a client for it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def store(self) -> SqlStore:
        return self.services.store

    @property
    def broker(self) -> Broker:
        return self.services.broker

    async def burst(self, app: EventStream) -> Worker:
        """Run a worker with ``app`` on this API's Redis keys and store until idle."""
        return await run_burst(app, self.settings, self.broker, self.store)

    async def post(
        self, type_: str = "T", payload: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", None)
        body = {"type": type_, "payload": {} if payload is None else payload, **kw}
        return await self.client.post("/events", json=body, headers=headers)

    async def accepted(self, type_: str = "T", payload: dict[str, Any] | None = None, **kw: Any) -> str:
        """POST one event that must be accepted; its id."""
        r = await self.post(type_, payload, **kw)
        assert r.status_code == 202, r.text
        event_id: str = r.json()["eventId"]
        return event_id

    async def stream_len(self) -> int:
        """XLEN of the stream, read through a client of the test's own (not the app's)."""
        url = self.settings.redis_url
        assert url
        redis = await connect(url)
        try:
            return int(await redis.xlen(self.broker.keys.stream))
        finally:
            await redis.aclose()

    async def counters(self) -> dict[str, int]:
        return await self.broker.counters()

    async def summary(self) -> dict[str, int]:
        r = await self.client.get("/metrics", headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        body: dict[str, int] = r.json()
        return body


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings, loopback=True)  # anonymous use, as `eventstream api` on 127.0.0.1
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client,
    ):
        yield Api(app, client)


MakeApi = Callable[..., Awaitable[Api]]


def assert_problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status whose detail names each of ``words``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    for word in words:
        assert word.lower() in body["detail"].lower(), (word, body["detail"])
    assert "Traceback" not in r.text
    assert 'File "' not in r.text
    return body


async def processed(api: Api, *types: str) -> list[str]:
    """Post one event of each type and process them all; their ids in posting order."""
    ids = [await api.accepted(t, {"n": i}) for i, t in enumerate(types)]
    await api.burst(recording_app([]))
    return ids


async def kill(api: Api, events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Post events and run a worker that dead-letters them; their ids in posting order."""
    ids = [await api.accepted(t, p) for t, p in events]
    await api.burst(failing_app())
    return ids


def spy_on_fast_path(app: Any) -> list[str]:
    """Wrap the ingest fast path's endpoints (eventstream.api.fastpath) of ``app``: the
    list returned gets the path of each request the fast path answers."""
    fast = app.fast_path
    assert fast is not None
    taken: list[str] = []
    for url, endpoint in list(fast.routes.items()):

        async def spy(request: Any, endpoint: Any = endpoint, url: str = url) -> Any:
            taken.append(url)
            return await endpoint(request)

        fast.routes[url] = spy
    return taken
