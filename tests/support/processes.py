"""The end-to-end harness: REAL ``eventstream`` processes against a real Redis.

Every process is started with ``python -m eventstream ...`` in its own session (so its
whole process group can be signalled), its stdout/stderr written to files in the
test's tmp_path, and an environment that points at the test's Redis, its own key
prefix and its own data dir (its own SQLite store). Nothing is mocked.

A :class:`Cluster` starts and stops one test's processes; ``cleanup()`` SIGKILLs by pid
every one still alive and every descendant of those (found by a unique marker in their
environment). The ``cluster`` fixture (tests/conftest.py) calls it in teardown, and the
logs of every process are attached to the report of a failed test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from eventstream.embedded import free_port
from tests.support.paths import REPO_ROOT
from tests.support.waiting import wait_for

E2E_APP = "tests.support.apps.e2e:app"
MARKER_ENV = "E2E_MARKER"
LOG_TAIL = 12_000


@dataclass
class Proc:
    """One real process started by the test."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return _tail(self.stderr_path)

    def stdout(self) -> str:
        return _tail(self.stdout_path)

    def logs(self) -> str:
        return (
            f"--- {self.name} (pid {self.pid}, exit {self.popen.returncode}): "
            f"{' '.join(self.args)}\n--- stderr:\n{self.stderr()}\n--- stdout:\n{self.stdout()}"
        )

    def log_events(self, event: str) -> list[dict[str, Any]]:
        """The structured (JSON) log lines of this process whose ``event`` is ``event``."""
        found = []
        text = self.stderr_path.read_text(errors="replace")
        for line in text[: text.rfind("\n") + 1].splitlines():  # not a line still being written
            if line.startswith("{") and f'"event": "{event}"' in line:
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found

    def close_files(self) -> None:
        for f in self.files:
            f.close()
        self.files.clear()


def _tail(path: Path, limit: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no file)"
    return text if len(text) <= limit else f"[... {len(text) - limit} chars cut ...]\n{text[-limit:]}"


@dataclass
class Api:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """Starts, stops and cleans up the real processes of one test."""

    def __init__(self, redis_url: str, prefix: str, tmp_path: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.side_file = tmp_path / "side-effects.log"
        self.logs_dir = tmp_path / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.marker = uuid.uuid4().hex
        self.procs: list[Proc] = []
        self._names: Counter[str] = Counter()
        self.settings_env: dict[str, str] = {}  # EVENTSTREAM_* every process of the test gets

    # ---- environment ---------------------------------------------------------------

    def env(self, *, redis: bool = True, **extra: str) -> dict[str, str]:
        """A clean environment: no inherited EVENTSTREAM_*, then this test's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
        python_path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONUNBUFFERED": "1",
                "PYTHONFAULTHANDLER": "1",
                "EVENTSTREAM_PREFIX": self.prefix,
                "EVENTSTREAM_DATA_DIR": str(self.data_dir),
                "EVENTSTREAM_RETRY_DELAY": "0.01",
                "EVENTSTREAM_RETRY_MAX_DELAY": "0.05",
                "EVENTSTREAM_POLL_INTERVAL": "0.02",
                "EVENTSTREAM_SHUTDOWN_GRACE": "10",
                "EVENTSTREAM_LOG_FORMAT": "json",
                "EVENTSTREAM_LOG_LEVEL": "info",
                "E2E_SIDE_FILE": str(self.side_file),
                MARKER_ENV: self.marker,
            }
        )
        env.update(self.settings_env)
        if redis:
            env["EVENTSTREAM_REDIS_URL"] = self.redis_url
        env.update(extra)
        return env

    # ---- starting ------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self._names[name] += 1
        label = f"{name}-{self._names[name]}"
        out_path = self.logs_dir / f"{label}.stdout"
        err_path = self.logs_dir / f"{label}.stderr"
        out = out_path.open("wb")
        err = err_path.open("wb")
        cmd = [sys.executable, "-m", "eventstream", *args]
        try:
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.tmp_path,  # no stray ./.env or ./data is picked up
                start_new_session=True,
            )
        except BaseException:
            out.close()
            err.close()
            raise
        proc = Proc(label, cmd, popen, out_path, err_path, [out, err])
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, port: int, timeout: float = 30.0) -> None:
        """Poll GET /readyz until it answers 200 (fails at once if the process exits)."""
        url = f"http://127.0.0.1:{port}/readyz"

        def probe() -> bool:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.logs()}")
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(probe, f"{proc.name} to answer /readyz on port {port}", timeout, 0.05)

    def start_api(self, **env: str) -> Api:
        """``eventstream api`` on a free port, ready (GET /readyz is 200) when this returns."""
        for _ in range(3):
            port = free_port()
            proc = self.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], self.env(**env))
            try:
                self.wait_ready(proc, port)
                return Api(proc, port)
            except AssertionError:
                # another process may have taken the free port between pick and bind
                if proc.alive() or "address already in use" not in proc.stderr().lower():
                    raise
                self._reap(proc)
        raise AssertionError("could not start the API on a free port")

    def start_worker(
        self,
        app: str | None = E2E_APP,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        **env: str,
    ) -> Proc:
        args = ["worker", *([app] if app else [])]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        if burst:
            args.append("--burst")
        return self.spawn("worker", args, self.env(**env))

    def start_workers(self, n: int, app: str | None = E2E_APP, **kwargs: Any) -> list[Proc]:
        return [self.start_worker(app, **kwargs) for _ in range(n)]

    # ---- stopping ------------------------------------------------------------------

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process, wait for it, and assert it exited with code 0."""
        if proc.alive():
            proc.popen.send_signal(sig)
        code = self.wait_exit(proc, timeout)
        assert code == 0, f"{proc.name} exited with {code} after {signal.Signals(sig).name}:\n{proc.logs()}"
        return code

    def wait_exit(self, proc: Proc, timeout: float = 30.0) -> int:
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # PYTHONFAULTHANDLER is set: SIGABRT makes it print every thread's stack
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
            raise AssertionError(
                f"{proc.name} still running {timeout:g}s after it was asked to stop:\n{proc.logs()}"
            ) from None
        proc.close_files()
        return code

    def kill9(self, proc: Proc) -> None:
        """SIGKILL, as a crash would."""
        proc.popen.kill()
        proc.popen.wait(10)
        proc.close_files()

    def _reap(self, proc: Proc) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(10)
        proc.close_files()

    def marked_pids(self) -> list[int]:
        """Pids of live processes (ours and their descendants) carrying this test's marker."""
        needle = f"{MARKER_ENV}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z" and needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def cleanup(self) -> list[str]:
        """Kill every leftover process by pid; return a description of each one that was left."""
        leftovers = [f"{p.name} (pid {p.pid})" for p in self.procs if p.alive()]
        for proc in self.procs:
            self._reap(proc)
        if Path("/proc").is_dir():
            for pid in self.marked_pids():
                leftovers.append(f"descendant pid {pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return leftovers


@contextlib.contextmanager
def processes(redis_url: str, prefix: str, tmp_path: Path, **env: str) -> Iterator[Cluster]:
    """Real ``eventstream`` processes on ``redis_url`` (``env``: more settings); every one
    left is killed after, and named."""
    c = Cluster(redis_url, prefix, tmp_path)
    c.settings_env.update(env)
    try:
        yield c
    finally:
        leftovers = c.cleanup()
        if leftovers:
            print(f"killed leftover processes: {', '.join(leftovers)}")


@contextlib.contextmanager
def api_process(cluster: Cluster) -> Iterator[Api]:
    """The API process; stopped with SIGTERM (exit code 0 asserted) on the way out."""
    a = cluster.start_api()
    yield a
    if a.proc.alive():
        cluster.stop(a.proc)


def start_up(cluster: Cluster, data_dir: Path, **env: str) -> tuple[Proc, httpx.Client]:
    """``eventstream up`` on a free port with NO Redis URL in its environment."""
    environment = cluster.env(redis=False, **env)
    del environment["EVENTSTREAM_DATA_DIR"]  # given by --data-dir instead
    assert not any(k == "EVENTSTREAM_REDIS_URL" for k in environment)
    port = free_port()
    args = ["up", E2E_APP, "--port", str(port), "--data-dir", str(data_dir)]
    proc = cluster.spawn("up", args, environment)
    cluster.wait_ready(proc, port, timeout=60)
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
