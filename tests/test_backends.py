"""open_backends: Redis and the store opened, the schema checked, both closed; open_broker and
open_store for the commands that need one of the two."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eventstream.backends import open_backends, open_broker, open_store, redis_options
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


# ---- the options redis-py gets (a managed Redis: tests/security/test_managed_redis.py) ----


def test_redis_options_carry_the_credentials_and_verify_tls(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    url = "rediss://redis.internal:6380/0"
    settings = make_settings(
        url,
        "p",
        tmp_path,
        redis_username="app",
        redis_password="pw",
        redis_tls_ca_file=tmp_path / "ca.pem",
        redis_tls_cert_file=tmp_path / "client.pem",
        redis_tls_key_file=tmp_path / "client.key",
    )
    assert redis_options(settings, url) == {
        "username": "app",
        "password": "pw",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(tmp_path / "ca.pem"),
        "ssl_certfile": str(tmp_path / "client.pem"),
        "ssl_keyfile": str(tmp_path / "client.key"),
    }
    # rediss:// without a CA file: still verified, against the system's CAs
    assert redis_options(make_settings(url, "p", tmp_path), url) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }
    assert redis_options(make_settings("redis://h:6379", "p", tmp_path), "redis://h:6379") == {}


def test_redis_options_check_the_url_they_are_given(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("PEM")
    settings = make_settings("", "p", tmp_path, redis_tls_ca_file=tmp_path / "ca.pem", redis_password="pw")
    with pytest.raises(ConfigError, match="not rediss://"):
        redis_options(settings, "redis://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="password is set twice") as info:
        redis_options(settings, "rediss://:other@127.0.0.1:6380")
    assert "other" not in str(info.value)
