"""End-to-end helpers: REAL ``eventstream`` processes against the session's private Redis.

Every process is started with ``python -m eventstream ...`` in its own session (so its
whole process group can be signalled), its stdout/stderr written to files in the
test's tmp_path, and an environment that points at the session's Redis, the test's
own key prefix and the test's own data dir (its own SQLite store). Nothing is mocked.

The ``cluster`` fixture hands a test a :class:`Cluster`. In teardown every process
it started that is still alive, and every descendant of those (found by a unique
marker in their environment), is SIGKILLed by pid; the logs of every process are
attached to the report of a failed test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, TypeVar

import httpx
import pytest

from eventstream.embedded import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_APP = "tests.e2e.apps:app"
MARKER_ENV = "E2E_MARKER"
LOG_TAIL = 12_000

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.05,
    last: Callable[[], object] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            detail = f"; last seen: {last()!r}" if last is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


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
        for line in self.stderr_path.read_text(errors="replace").splitlines():
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


class Effect(NamedTuple):
    """One side-effect line written by a handler of tests/e2e/apps.py."""

    kind: str
    event_id: str
    attempt: int
    pid: int
    at: float  # time.time() when it was written


def side_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, event_id, attempt, pid, at = line.split()
        out.append(Effect(kind, event_id, int(attempt), int(pid), float(at)))
    return out


def count_side_effects(path: Path, kind: str) -> Counter[str]:
    """How many times the handler wrote side effect ``kind`` for each event id."""
    return Counter(e.event_id for e in side_effects(path) if e.kind == kind)


def get_metrics(client: httpx.Client) -> dict[str, int]:
    r = client.get("/metrics", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    data: dict[str, int] = r.json()
    return data


def live(m: dict[str, int]) -> int:
    """Events not yet settled for good: queued + in flight + waiting for a retry."""
    return m["queued"] + m["pending"] + m["scheduled"]


def wait_drained(client: httpx.Client, received: int, timeout: float = 60.0) -> dict[str, int]:
    """Poll /metrics until ``received`` events were accepted and none is live; return the metrics."""
    seen: dict[str, int] = {}

    def probe() -> dict[str, int] | None:
        nonlocal seen
        seen = get_metrics(client)
        return seen if seen["received"] >= received and live(seen) == 0 else None

    return wait_for(probe, f"{received} events to be settled", timeout, 0.1, last=lambda: seen)


def page_all(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged listing (GET /events, GET /failed-events), following nextCursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        query = {"limit": 1000, **params}
        if cursor:
            query["cursor"] = cursor
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["items"])
        cursor = body["nextCursor"]
        if not cursor:
            return items
    raise AssertionError(f"{path} paging does not end")


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the stderr/stdout of every process the test started."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for proc in cluster.procs:
            report.sections.append((f"process {proc.name}", proc.logs()))
    return report


@pytest.fixture
def cluster(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url, prefix, tmp_path)
    try:
        yield c
    finally:
        leftovers = c.cleanup()
        if leftovers:
            print(f"killed leftover processes: {', '.join(leftovers)}")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Api]:
    """The API process; stopped with SIGTERM (exit code 0 asserted) after the test."""
    a = cluster.start_api()
    yield a
    if a.proc.alive():
        cluster.stop(a.proc)


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30.0) as c:
        yield c
