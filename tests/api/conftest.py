"""The real app (create_app) inside its lifespan, driven over ASGI by httpx.

``api`` is an app built from the test's ``settings`` (its own key prefix, its SQLite
store in tmp_path) with a client, its services, and helpers to post events, run a
burst worker on the same Redis keys and store, and read counters. ``make_api(**overrides)``
builds one with changed settings; ``down_api`` is one whose Redis URL is a closed port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from eventstream.api import create_app
from eventstream.api.deps import Services
from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.conftest import make_settings, run_burst

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
        return int(await self.broker.redis.xlen(self.broker.keys.stream))

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


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running(settings) as a:
        yield a


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[MakeApi]:
    """An app on the test's prefix with some settings changed: ``await make_api(max_batch=3)``."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Api:
            return await stack.enter_async_context(
                running(make_settings(redis_url, prefix, tmp_path, **overrides))
            )

        yield make


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def down_api(prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app with Redis unreachable (nothing listens on its port)."""
    settings = make_settings(f"redis://127.0.0.1:{closed_port()}", prefix, tmp_path)
    async with running(settings) as a:
        yield a


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
