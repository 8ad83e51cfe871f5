"""``eventstream api`` and ``eventstream worker``: one process each, the children of ``up``.

Either runs alone too, on EVENTSTREAM_REDIS_URL or beside a running ``eventstream up``
(found through its data dir).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from eventstream.cli.common import (
    DEFAULT_CONCURRENCY,
    AppArg,
    Command,
    DataDirOpt,
    HostOpt,
    InsecureOpt,
    PortOpt,
    cli,
    fail,
    redis_url_or_exit,
    settings_or_exit,
)
from eventstream.errors import EventStreamError


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
    from eventstream.cli.preflight import is_loopback, port_free_or_exit, refuse_without_keys
    from eventstream.logs import configure, protect_output

    protect_output()
    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format)
    if not settings.redis_url:
        settings = settings_or_exit(data_dir=data_dir, redis_url=redis_url_or_exit(settings))
    port_free_or_exit(host, port)
    loopback = is_loopback(host)
    if not loopback:
        refuse_without_keys(settings, host, insecure)
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
        root_path=settings.root_path,  # behind a proxy under a sub-path: the links carry it
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
