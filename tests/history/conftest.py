"""Replay tests drive the real app, like tests/api; ``store_api`` builds one on SQLite or on
the session's PostgreSQL database (``postgres_url``, tests/conftest.py), per the test's parameter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.asgi import Api, MakeApi


@pytest.fixture(params=["sqlite", "postgresql"])
def store_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url")}


@pytest.fixture
def store_api(make_api: MakeApi, store_overrides: dict[str, Any]) -> MakeApi:
    """``make_api`` whose store is the parameter's backend; a PostgreSQL one starts empty."""

    async def make(**overrides: Any) -> Api:
        api = await make_api(**store_overrides, **overrides)
        if api.store.dialect == "postgresql":
            async with api.store.engine.begin() as conn:
                await conn.exec_driver_sql("TRUNCATE eventstream_events")
        return api

    return make
