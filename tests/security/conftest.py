"""The real app in-process (as tests/api does), with its listen mode, plus API keys made
through the real registry on the session's Redis (tests/support/auth.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from eventstream.auth.apikeys import KeyRegistry
from tests.support.asgi import Api, MakeApi
from tests.support.auth import NewKey, running
from tests.support.factories import make_settings


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
