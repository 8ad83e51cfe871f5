"""open_backends: Redis and the store opened, the schema checked, both closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstream.backends import open_backends
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
