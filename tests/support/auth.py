"""The app in a listen mode, and API keys made through the real registry.

``running(settings, **mode)`` is the app with ``create_app``'s listen mode (by default
neither loopback nor insecure: every request but the open ones needs a key); app
errors are answered, not raised into the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from eventstream.api import create_app
from eventstream.auth.apikeys import KeyRegistry
from eventstream.settings import Settings
from tests.support.asgi import Api


@asynccontextmanager
async def running(settings: Settings, **mode: Any) -> AsyncIterator[Api]:
    app = create_app(settings, **mode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        yield Api(app, client)


NewKey = Callable[..., Awaitable[str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


EVENT = {"type": "T", "payload": {"a": 1}}


async def create_key(
    api: Api, scope: str, name: str = "test", rate: float | None = None, burst: int | None = None
) -> str:
    _, token = await KeyRegistry(api.broker).create(name, scope, rate, burst)
    return token
