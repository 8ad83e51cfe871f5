"""``eventstream up``: Redis (embedded unless one is configured), the API and the workers, together.

The checks before the start are in :mod:`eventstream.cli.preflight`; the children are
watched and stopped by :mod:`eventstream.cli.supervisor`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from eventstream.cli.common import (
    AppArg,
    Command,
    DataDirOpt,
    HostOpt,
    InsecureOpt,
    PortOpt,
    cli,
    console,
    fail,
    settings_or_exit,
)
from eventstream.errors import EventStreamError


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
    import subprocess

    from eventstream.cli.preflight import is_loopback, port_free_or_exit, refuse_without_keys
    from eventstream.cli.supervisor import StopSignals, stop_children, supervise
    from eventstream.embedded import EmbeddedRedis
    from eventstream.logs import configure, protect_output

    protect_output()  # a closed terminal or pipe must not keep us from stopping what we start
    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    signals = StopSignals()  # before anything starts: a Ctrl-C during start-up stops it too
    port_free_or_exit(host, port)
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
                f"[green]embedded Redis[/green] ({server.describe()}) on {server.url} "
                f"(append-only files in {server.data_dir})"
            )
        if not is_loopback(host) and not insecure:
            # refuse before starting anything (the API would refuse on its own, after the workers)
            refuse_without_keys(settings, host, insecure, env.get("EVENTSTREAM_REDIS_URL"))
        if not signals.received:
            me = [sys.executable, "-m", "eventstream"]
            api_args = ["api", "--host", host, "--port", str(port), *(["--insecure"] if insecure else [])]
            children.append(subprocess.Popen([*me, *api_args], env=env))
            for _ in range(workers):
                children.append(subprocess.Popen([*me, "worker", *([app] if app else [])], env=env))
            console.print(
                f"[green]API[/green] on http://{host}:{port}  ·  dashboard http://{host}:{port}/ui  ·  "
                f"{workers} worker(s)  ·  Ctrl-C to stop"
            )
            code = supervise(children, signals)
    finally:
        try:
            stop_children(children, signals, 2 * settings.shutdown_grace + 10)
        finally:
            if server is not None:
                server.stop()
        if children:
            console.print("stopped")
    raise typer.Exit(code)
