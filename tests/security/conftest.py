"""The real app in-process (as tests/api does), with its listen mode, plus API keys made
through the real registry on the session's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstream.api import create_app
from eventstream.auth.apikeys import KeyRegistry
from eventstream.settings import Settings
from tests.api.conftest import Api
from tests.conftest import make_settings


@asynccontextmanager
async def running(settings: Settings, **mode: Any) -> AsyncIterator[Api]:
    app = create_app(settings, **mode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        yield Api(app, client)


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[MakeApi]:
    """``await make_api(loopback=False, anonymous_rate=5)``: mode keywords go to create_app,
    the rest are settings."""
    async with AsyncExitStack() as stack:

        async def make(loopback: bool = True, insecure: bool = False, **overrides: Any) -> Api:
            url = overrides.pop("redis_url", redis_url)
            settings = make_settings(url, prefix, tmp_path, **overrides)
            return await stack.enter_async_context(running(settings, loopback=loopback, insecure=insecure))

        yield make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


NewKey = Callable[..., Awaitable[str]]


@pytest.fixture
def new_key(api: Api) -> NewKey:
    """``token = await new_key("admin", rate=5)``: a key made by the real registry."""

    async def make(
        scope: str, name: str = "test", rate: float | None = None, burst: int | None = None
    ) -> str:
        registry = KeyRegistry(api.broker)
        _, token = await registry.create(name, scope, rate, burst)
        return token

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


EVENT = {"type": "T", "payload": {"a": 1}}


async def create_key(
    api: Api, scope: str, name: str = "test", rate: float | None = None, burst: int | None = None
) -> str:
    _, token = await KeyRegistry(api.broker).create(name, scope, rate, burst)
    return token
