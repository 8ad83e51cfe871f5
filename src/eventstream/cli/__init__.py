"""The ``eventstream`` command: up, api, worker, audit.

Each group of further subcommands lives in its own module here and registers
itself on ``cli`` (imported at the end of this file).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from eventstream import __version__
from eventstream.cli.common import (
    DEFAULT_CONCURRENCY,
    Command,
    DataDirOpt,
    cli,
    console,
    fail,
    redis_url_or_exit,
    settings_or_exit,
)
from eventstream.errors import BackendError, BackendUnavailable, EventStreamError

if TYPE_CHECKING:
    from eventstream.ops.audit import AuditReport
    from eventstream.settings import Settings

AppArg = Annotated[
    str | None,
    typer.Argument(
        help="Your handlers, as MODULE:ATTRIBUTE (e.g. examples.shop:app). "
        "Without it every event is simply recorded as processed.",
        show_default=False,
        metavar="MODULE:APP",
    ),
]
HostOpt = Annotated[str, typer.Option(metavar="ADDRESS", help="Address the HTTP API listens on.")]
PortOpt = Annotated[int, typer.Option(metavar="PORT", help="Port the HTTP API listens on.")]
InsecureOpt = Annotated[
    bool,
    typer.Option(
        help="Accept anonymous requests on a non-loopback address while no API key exists "
        "(refused without it)."
    ),
]


@cli.command(cls=Command)
def up(
    app: AppArg = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[int, typer.Option(min=1, metavar="N", help="Worker processes to run.")] = 1,
    insecure: InsecureOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run everything: Redis (embedded unless EVENTSTREAM_REDIS_URL is set), the API and workers.

    Ctrl-C stops it all cleanly (a second Ctrl-C stops handlers still running at once);
    events are kept in the data dir for the next start.
    """
    from eventstream.embedded import EmbeddedRedis
    from eventstream.logs import configure, protect_output

    protect_output()  # a closed terminal or pipe must not keep us from stopping what we start
    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    signals = _StopSignals()  # before anything starts: a Ctrl-C during start-up stops it too
    _port_free_or_exit(host, port)
    env = dict(os.environ)
    env["EVENTSTREAM_DATA_DIR"] = str(settings.data_dir.resolve())
    server = None
    children: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        if not settings.redis_url:
            try:
                server = EmbeddedRedis(settings.data_dir / "redis").start()
            except EventStreamError as exc:
                raise fail(exc) from None
            env["EVENTSTREAM_REDIS_URL"] = server.url
            console.print(
                f"[green]embedded Redis[/green] on {server.url} (append-only files in {server.data_dir})"
            )
        if not _is_loopback(host) and not insecure:
            # refuse before starting anything (the API would refuse on its own, after the workers)
            _refuse_without_keys(settings, host, insecure, env.get("EVENTSTREAM_REDIS_URL"))
        if not signals.received:
            me = [sys.executable, "-m", "eventstream"]
            api_args = ["api", "--host", host, "--port", str(port), *(["--insecure"] if insecure else [])]
            children.append(subprocess.Popen([*me, *api_args], env=env))
            for _ in range(workers):
                children.append(subprocess.Popen([*me, "worker", *([app] if app else [])], env=env))
            console.print(
                f"[green]API[/green] on http://{host}:{port}  ·  {workers} worker(s)  ·  Ctrl-C to stop"
            )
            code = _supervise(children, signals)
    finally:
        try:
            _stop_children(children, signals, 2 * settings.shutdown_grace + 10)
        finally:
            if server is not None:
                server.stop()
        if children:
            console.print("stopped")
    raise typer.Exit(code)


class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask ``up`` to stop; the second one to stop at once.

    Only flags are set here: printing from a signal handler could interrupt a print."""

    def __init__(self) -> None:
        self.received = 0
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received += 1

    @property
    def now(self) -> bool:
        return self.received > 1


def _port_free_or_exit(host: str, port: int) -> None:
    """Refuse a port that is taken before anything is started; bound as uvicorn binds it."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        console.print(
            f"[red]error:[/red] cannot listen on {host}:{port}: {reason} (another `eventstream up` "
            "may be running there); choose another port with --port, e.g. --port 8001"
        )
        raise typer.Exit(2) from None


def _supervise(children: list[subprocess.Popen[bytes]], signals: _StopSignals) -> int:
    """Wait until a stop signal, or until a child exits on its own (then its exit code)."""
    while not signals.received:
        for child in children:
            if child.poll() is not None:
                console.print(f"[red]a process exited (code {child.returncode}); stopping[/red]")
                return child.returncode or 1
        time.sleep(0.2)
    return 0


def _stop_children(children: list[subprocess.Popen[bytes]], signals: _StopSignals, grace_s: float) -> None:
    """SIGTERM every child still running; SIGKILL those still running after ``grace_s``
    (a worker may take the grace period to finish handlers, as long again to record their
    outcomes, and a few seconds to stop its internal tasks), or at a second Ctrl-C."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    if any(child.poll() is None for child in children):
        console.print(
            f"stopping: handlers still running get up to {grace_s:g} s (Ctrl-C again to stop them now)"
        )
    deadline = time.monotonic() + grace_s
    while any(child.poll() is None for child in children):
        if signals.now or time.monotonic() >= deadline:
            why = "a second stop signal" if signals.now else "they did not stop in time"
            alive = [child for child in children if child.poll() is None]
            console.print(f"[red]killing {', '.join(str(c.pid) for c in alive)}: {why}[/red]")
            for child in alive:
                child.kill()
            for child in alive:
                child.wait()
            break
        time.sleep(0.05)
    for child in children:
        # -SIGTERM / -SIGINT: ended by the stop signal itself, after its own graceful
        # stop (a second signal can land while it exits): a stop all the same
        if child.returncode not in (0, None, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL):
            console.print(f"[yellow]process {child.pid} exited with code {child.returncode}[/yellow]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_without_keys(settings: Settings, host: str, insecure: bool, url: str | None = None) -> None:
    """A non-loopback address with no API key is refused unless --insecure."""
    from eventstream.broker import Broker, connect
    from eventstream.broker.keys import Keys

    async def any_keys() -> bool:
        redis = connect(url or settings.redis_url or "", timeout=settings.redis_timeout)
        try:
            return await Broker(redis, Keys(settings.prefix)).any_keys()
        finally:
            await redis.aclose()

    try:
        keys_exist = asyncio.run(any_keys())
    except Exception as exc:
        if insecure:
            return
        console.print(
            f"[red]error:[/red] listening on {host} needs API keys, and Redis cannot be reached to "
            f"check for them ({type(exc).__name__}); fix Redis, or pass --insecure"
        )
        raise typer.Exit(2) from None
    if keys_exist:
        return
    if insecure:
        console.print(
            f"[yellow]warning:[/yellow] --insecure: listening on {host} with no API key, so anyone who "
            "can reach the port may post, read, replay and delete; create a key with "
            "`eventstream keys create` to require keys"
        )
        return
    console.print(
        f"[red]error:[/red] refusing to listen on {host} (not a loopback address) with no API key: "
        "anyone who can reach the port could post, read, replay and delete. Create a key first "
        "(`eventstream keys create --name NAME --scope admin`), listen on 127.0.0.1, or pass --insecure"
    )
    raise typer.Exit(2)


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(0)


@cli.command()
def api(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    insecure: InsecureOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the HTTP API alone, on EVENTSTREAM_REDIS_URL or beside a running `eventstream up`."""
    import uvicorn

    from eventstream.api import create_app
    from eventstream.api.server import limit_concurrency, protocol_class
    from eventstream.logs import configure, protect_output

    protect_output()
    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    if not settings.redis_url:
        settings = settings_or_exit(data_dir=data_dir, redis_url=redis_url_or_exit(settings))
    _port_free_or_exit(host, port)
    loopback = _is_loopback(host)
    if not loopback:
        _refuse_without_keys(settings, host, insecure)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the
    # original handler in place, so the process would die by it (exit status 143).
    # A graceful stop is a success: let that re-raised SIGTERM end the process with 0.
    signal.signal(signal.SIGTERM, _exit_ok)
    signal.signal(signal.SIGINT, _exit_ok)  # Ctrl-C: the same graceful stop
    uvicorn.run(
        create_app(settings, loopback=loopback, insecure=insecure),
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_class(settings),  # httptools, with a head-size cap and head and body timeouts
        limit_concurrency=limit_concurrency(settings),
        log_level="warning",
        log_config=None,  # keep eventstream.logs' handler: uvicorn's lines in the same format
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        proxy_headers=False,  # X-Forwarded-For would let a client pick its rate-limit address
        server_header=False,
    )


@cli.command(cls=Command)
def worker(
    app: AppArg = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            envvar="EVENTSTREAM_CONCURRENCY",
            show_default=str(DEFAULT_CONCURRENCY),
            metavar="N",
            help="Handlers running at once.",
        ),
    ] = None,
    burst: Annotated[bool, typer.Option(help="Exit once nothing is queued, in flight or scheduled.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Run one worker process, on EVENTSTREAM_REDIS_URL or beside a running `eventstream up`.

    SIGTERM stops it gracefully."""
    from eventstream.logs import configure, protect_output

    protect_output()
    settings = settings_or_exit(concurrency=concurrency, data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    if not settings.redis_url:
        url = redis_url_or_exit(settings)
        settings = settings_or_exit(concurrency=concurrency, data_dir=data_dir, redis_url=url)
    sys.path.insert(0, os.getcwd())
    from eventstream.worker.process import run as run_worker

    try:
        run_worker(settings, app, burst)
    except EventStreamError as exc:
        raise fail(exc) from None


@cli.command()
def audit(
    examples: Annotated[int, typer.Option(min=0, metavar="N", help="Example ids shown per problem.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Check that every accepted event is in exactly one place and list anything stranded.

    Works on Redis and the store directly: beside a running `eventstream up` (its data
    dir), or on EVENTSTREAM_REDIS_URL and EVENTSTREAM_DATABASE_URL. Exit code 0 when all
    is well, 1 when something is wrong.
    """
    from eventstream.logs import configure

    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    url = redis_url_or_exit(settings)
    try:
        report = asyncio.run(_run_audit(settings, url, examples))
    except (BackendUnavailable, BackendError) as exc:  # Redis or the store unreachable: no traceback
        console.print(f"[red]error:[/red] cannot audit: {exc}")
        raise typer.Exit(2) from None
    except EventStreamError as exc:
        raise fail(exc) from None
    except Exception as exc:  # the audit's own reads of Redis: say so, no traceback
        console.print(f"[red]error:[/red] cannot audit: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        import msgspec

        typer.echo(msgspec.json.encode(report.to_json()).decode())
    else:
        _print_audit(report)
    raise typer.Exit(0 if report.ok else 1)


async def _run_audit(settings: Settings, url: str, examples: int) -> AuditReport:
    from eventstream.backends import open_backends
    from eventstream.ops.audit import audit as run_audit

    async with open_backends(settings, url) as b:
        return await run_audit(
            b.broker,
            b.store,
            time.time_ns() // 1_000_000,
            visibility_timeout_ms=int(settings.visibility_timeout * 1000),
            examples=examples,
        )


def _print_audit(report: AuditReport) -> None:
    from rich.table import Table

    out = Console()
    names = ("received", "processed", "dlq", "deleted", "queued", "pending", "scheduled", "accounted")
    sums = Table(title="conservation: received = processed + dlq + deleted + queued + pending + scheduled")
    for name in names:
        sums.add_column(name, justify="right")
    sums.add_row(*(str(getattr(report, n)) for n in names))
    out.print(sums)
    out.print(
        f"store: {report.store_processed} processed rows ({report.live_in_store} live entries with rows)"
    )
    if report.ok:
        out.print("[green]OK[/green]: every accepted event is in exactly one place; nothing is stranded")
        return
    problems = Table(title="problems")
    problems.add_column("problem")
    problems.add_column("count", justify="right")
    problems.add_column("what it means")
    problems.add_column("examples")
    for p in report.problems:
        problems.add_row(p.code, str(p.count), p.detail, "\n".join(p.examples))
    out.print(problems)
    out.print(f"[red]{len(report.problems)} problem(s) found[/red]")


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """The ``eventstream`` command. Output never fails it: a closed stdout ends it with 0."""
    from eventstream.logs import OutputClosed, SafeStream, safe

    sys.stdout = SafeStream(sys.stdout, end_on_broken_pipe=True)
    sys.stderr = safe(sys.stderr)
    try:
        cli()
    except OutputClosed:  # `eventstream dlq list | head`: the reader has what it wanted
        sys.exit(0)


# Subcommand groups register themselves on `cli` when imported.
# (One line per module; keep them at the end, after `cli` has its own commands.)
from eventstream.cli import db as _db  # noqa: E402, F401
from eventstream.cli import keys as _keys  # noqa: E402, F401
from eventstream.cli import ops as _ops  # noqa: E402, F401
from eventstream.cli import procfile as _procfile  # noqa: E402, F401
from eventstream.cli import replay as _replay  # noqa: E402, F401
