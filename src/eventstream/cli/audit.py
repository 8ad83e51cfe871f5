"""``eventstream audit``: the conservation check of :mod:`eventstream.ops.audit`, printed.

A person gets two tables (the sums, then any problems with example ids); a script
passes ``--json``. Exit code 0 when all is well, 1 when something is wrong, 2 when
Redis or the store cannot be reached.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from eventstream.cli.common import DataDirOpt, cli, console, fail, redis_url_or_exit, settings_or_exit
from eventstream.errors import BackendError, BackendUnavailable, EventStreamError

if TYPE_CHECKING:
    from eventstream.ops.audit import AuditReport
    from eventstream.settings import Settings


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
    except Exception as exc:  # anything else: say so, no traceback
        console.print(f"[red]error:[/red] cannot audit: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        import msgspec

        typer.echo(msgspec.json.encode(report.to_json()).decode())
    else:
        print_report(report)
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


def print_report(report: AuditReport) -> None:
    """The sums as one table, then OK or the problems with their example ids, on stdout."""
    from rich.table import Table

    out = Console()
    names = (
        "received",
        "processed",
        "dlq",
        "deleted",
        "queued",
        "pending",
        "scheduled",
        "parked",
        "accounted",
    )
    sums = Table(
        title="conservation: received = processed + dlq + deleted + queued + pending + scheduled + parked"
    )
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
