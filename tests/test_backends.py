"""open_backends: Redis and the store opened, the schema checked, both closed; open_broker and
open_store for the commands that need one of the two."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eventstream.backends import open_backends, open_broker, open_store
from eventstream.errors import ConfigError
from tests.support.factories import make_settings


async def test_opens_both_checks_the_schema_and_closes_both(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, prefix, tmp_path / "data")
    async with open_backends(settings) as b:
        await b.broker.ping()  # raises when Redis is not reachable
        assert await b.store.count() == 0  # the embedded store's schema was created
        assert b.broker.keys.prefix == prefix
    assert (tmp_path / "data" / "events.db").exists()


async def test_without_a_redis_url_it_says_which_setting(tmp_path: Path) -> None:
    settings = make_settings("", "p", tmp_path)
    with pytest.raises(ConfigError, match="EVENTSTREAM_REDIS_URL"):
        async with open_backends(settings):
            pass


async def test_open_broker_alone(redis_url: str, prefix: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, prefix, tmp_path / "data")
    async with open_broker(settings) as broker:
        await broker.ping()
        assert broker.keys.prefix == prefix
    assert not (tmp_path / "data").exists(), "no store was opened"
    with pytest.raises(ConfigError, match="EVENTSTREAM_REDIS_URL"):
        async with open_broker(make_settings("", prefix, tmp_path)):
            pass


async def test_open_store_alone_checks_the_schema_unless_told_not_to(tmp_path: Path) -> None:
    unchecked = make_settings("", "p", tmp_path / "unchecked")
    async with open_store(unchecked, check_schema=False) as store:  # as `eventstream db` opens it
        assert store is not None
    with sqlite3.connect(tmp_path / "unchecked" / "events.db") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
    async with open_store(make_settings("", "p", tmp_path / "checked")) as store:
        assert await store.count() == 0  # the embedded store's schema was created
