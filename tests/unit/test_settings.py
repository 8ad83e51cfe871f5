"""Settings: EVENTSTREAM_* environment, .env, validation that fails fast, derived values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from eventstream.broker.keys import Keys
from eventstream.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EVENTSTREAM_* from the outside and no ./.env: each test sets what it needs."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = Settings()
    assert s.redis_url is None
    assert s.database_url is None
    assert s.prefix == "eventstream"
    assert s.max_attempts == 5
    assert s.concurrency == 256
    assert s.visibility_timeout == 30.0
    assert s.max_deliveries == 3
    assert s.log_level == "info"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("EVENTSTREAM_PREFIX", "shop")
    monkeypatch.setenv("EVENTSTREAM_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("EVENTSTREAM_RETRY_DELAY", "0.25")
    monkeypatch.setenv("EVENTSTREAM_CONCURRENCY", "12")
    monkeypatch.setenv("eventstream_log_level", "debug")  # case-insensitive names
    s = Settings()
    assert s.redis_url == "redis://example:6380/2"
    assert s.prefix == "shop"
    assert s.max_attempts == 9
    assert s.retry_delay == 0.25
    assert s.concurrency == 12
    assert s.log_level == "debug"


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EVENTSTREAM_PREFIX=fromfile\nEVENTSTREAM_BATCH_SIZE=77\n")
    s = Settings()
    assert (s.prefix, s.batch_size) == ("fromfile", 77)
    monkeypatch.setenv("EVENTSTREAM_PREFIX", "fromenv")
    assert Settings().prefix == "fromenv"


def test_unrelated_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_NOT_A_SETTING", "x")
    monkeypatch.setenv("MAX_ATTEMPTS", "2")
    assert Settings().max_attempts == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_ATTEMPTS", "0"),
        ("MAX_ATTEMPTS", "1001"),
        ("MAX_ATTEMPTS", "many"),
        ("RETRY_DELAY", "-1"),
        ("HANDLER_TIMEOUT", "0"),
        ("CONCURRENCY", "0"),
        ("BATCH_SIZE", "10001"),
        ("VISIBILITY_TIMEOUT", "0"),
        ("MAX_DELIVERIES", "0"),
        ("SHUTDOWN_GRACE", "-0.5"),
        ("POLL_INTERVAL", "0"),
        ("MAX_BODY_BYTES", "100"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("PREFIX", "bad prefix"),
        ("PREFIX", "{x}"),
        ("PREFIX", ""),
        ("PREFIX", "shop\n"),
    ],
)
def test_invalid_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"EVENTSTREAM_{name}", value)
    with pytest.raises(pydantic.ValidationError) as info:
        Settings()
    assert name.lower() in str(info.value)


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.max_attempts = 3  # type: ignore[misc]


def test_keys_follow_the_prefix() -> None:
    s = Settings(prefix="shop")
    assert Keys(s.prefix).stream == "{shop}:stream"


def test_settings_load_without_the_broker() -> None:
    """Settings are the floor every room stands on: reading them imports no Redis client."""
    code = (
        "import sys, eventstream.settings;"
        "print(sorted(m for m in sys.modules if m.startswith(('redis', 'eventstream.broker'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_store_url_default_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=Path("rel/data"))
    expected = (tmp_path / "rel" / "data" / "events.db").resolve()
    assert s.store_url == f"sqlite+aiosqlite:///{expected}"
    assert Path(s.store_url.removeprefix("sqlite+aiosqlite:///")).is_absolute()


def test_store_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_DATA_DIR", "/srv/es")
    assert Settings().store_url == f"sqlite+aiosqlite:///{Path('/srv/es/events.db').resolve()}"
    monkeypatch.setenv("EVENTSTREAM_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert Settings().store_url == "postgresql+asyncpg://u@h/db"


def test_load_settings_overrides_win_and_none_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_CONCURRENCY", "8")
    monkeypatch.setenv("EVENTSTREAM_PREFIX", "envp")
    s = load_settings(concurrency=3, prefix=None)
    assert s.concurrency == 3
    assert s.prefix == "envp"
    with pytest.raises(pydantic.ValidationError):
        load_settings(concurrency=0)


# ---- a managed Redis: credentials and TLS ------------------------------------------------

SECRET = "s3cret-Pa55"


def test_redis_credentials_and_tls_files_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("PEM")
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "rediss://redis.internal:6380/0")
    monkeypatch.setenv("EVENTSTREAM_REDIS_USERNAME", "app")
    monkeypatch.setenv("EVENTSTREAM_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("EVENTSTREAM_REDIS_TLS_CA_FILE", str(tmp_path / "ca.pem"))
    s = Settings()
    assert s.redis_username == "app"
    assert s.redis_password is not None
    assert s.redis_password.get_secret_value() == SECRET
    assert s.redis_tls_ca_file == tmp_path / "ca.pem"


def test_no_password_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", f"redis://app:{SECRET}@redis.internal:6379/0")
    monkeypatch.setenv("EVENTSTREAM_DATABASE_URL", f"postgresql+asyncpg://app:{SECRET}@db/es")
    s = Settings()
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    s = Settings(redis_url="redis://redis.internal:6379/0", redis_password=SECRET)
    assert SECRET not in repr(s)
    # a validation error echoes no input (the input holds every setting)
    monkeypatch.setenv("EVENTSTREAM_MAX_ATTEMPTS", "0")
    with pytest.raises(pydantic.ValidationError) as info:
        Settings()
    assert "max_attempts" in str(info.value)
    assert SECRET not in str(info.value)


def test_an_empty_username_or_password_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "redis://app:pw@redis.internal:6379/0")
    monkeypatch.setenv("EVENTSTREAM_REDIS_USERNAME", "")  # an optional Secret key, absent
    monkeypatch.setenv("EVENTSTREAM_REDIS_PASSWORD", "")
    s = Settings()
    assert (s.redis_username, s.redis_password) == (None, None)


@pytest.mark.parametrize("name", ["CA_FILE", "CERT_FILE", "KEY_FILE"])
def test_a_tls_file_that_does_not_exist_fails_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "rediss://redis.internal:6380/0")
    monkeypatch.setenv(f"EVENTSTREAM_REDIS_TLS_{name}", str(tmp_path / "nothing.pem"))
    with pytest.raises(pydantic.ValidationError, match=r"nothing\.pem' is not a file") as info:
        Settings()
    assert f"redis_tls_{name.lower()}" in str(info.value)


@pytest.mark.parametrize("url", ["redis://redis.internal:6379/0", "unix:///run/redis.sock"])
def test_tls_files_need_a_rediss_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> None:
    (tmp_path / "ca.pem").write_text("PEM")
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", url)
    monkeypatch.setenv("EVENTSTREAM_REDIS_TLS_CA_FILE", str(tmp_path / "ca.pem"))
    with pytest.raises(pydantic.ValidationError, match="TLS settings need a rediss:// URL"):
        Settings()


def test_a_client_certificate_needs_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("PEM")
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "rediss://redis.internal:6380/0")
    monkeypatch.setenv("EVENTSTREAM_REDIS_TLS_CERT_FILE", str(tmp_path / "client.pem"))
    with pytest.raises(pydantic.ValidationError, match="needs both EVENTSTREAM_REDIS_TLS_CERT_FILE and"):
        Settings()


@pytest.mark.parametrize(
    ("url", "setting", "part"),
    [
        (f"redis://:{SECRET}@h:6379", "PASSWORD", "password"),
        (f"redis://app:{SECRET}@h:6379", "PASSWORD", "password"),
        (f"redis://h:6379/0?password={SECRET}", "PASSWORD", "password"),
        ("redis://app@h:6379", "USERNAME", "username"),
    ],
)
def test_a_credential_set_twice_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, url: str, setting: str, part: str
) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", url)
    monkeypatch.setenv(f"EVENTSTREAM_REDIS_{setting}", SECRET)
    with pytest.raises(pydantic.ValidationError) as info:
        Settings()
    message = str(info.value)
    assert (
        f"the Redis {part} is set twice, in EVENTSTREAM_REDIS_URL and in EVENTSTREAM_REDIS_{setting}"
        in message
    )
    assert SECRET not in message


def test_the_user_in_the_url_and_the_password_in_a_setting_go_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_URL", "rediss://app@redis.internal:6380/0")
    monkeypatch.setenv("EVENTSTREAM_REDIS_PASSWORD", SECRET)
    assert Settings().redis_url_problem("rediss://app@redis.internal:6380/0") is None
