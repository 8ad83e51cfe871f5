"""``eventstream replay``: replay processed events (as new ones) or dead ones, by filters.

Talks to Redis and the store directly, like ``eventstream audit``, and runs the replay to
the end at the capped rate (Ctrl-C stops it between chunks; what went, went).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from eventstream.cli.common import (
    DEFAULT_REPLAY_RATE,
    DataDirOpt,
    cli,
    console,
    fail,
    redis_url_or_exit,
    settings_or_exit,
)
from eventstream.errors import BackendError, BackendUnavailable, EventStreamError

if TYPE_CHECKING:
    from eventstream.replay.engine import Selection
    from eventstream.settings import Settings


class Source(StrEnum):
    history = "history"
    dlq = "dlq"


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a bare time on the command line is the operator's local time
        value = value.astimezone()
    return int(value.timestamp() * 1000)


@cli.command()
def replay(
    source: Annotated[
        Source,
        typer.Option(
            "--from",
            metavar="[history|dlq]",
            help="history: processed events, as new events; dlq: dead events.",
        ),
    ] = Source.history,
    type_: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Only events of this type.")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="From this time (inclusive).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="Up to this time (exclusive).")
    ] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", metavar="ID", help="This event (repeatable).")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            metavar="N",
            show_default=False,
            help=f"Events/s, at most EVENTSTREAM_REPLAY_RATE (the cap: {DEFAULT_REPLAY_RATE:g} unless set).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count what would be replayed.")] = False,
    key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="History only: replay nothing twice under this key (within the dedupe window).",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replay events chosen by type, time range (processedAt / failedAt) or ids, at a capped rate."""
    from eventstream.logs import AUDIT_FILE, configure
    from eventstream.replay.engine import Selection

    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format, audit_file=settings.data_dir / AUDIT_FILE)
    url = redis_url_or_exit(settings)
    # like the API: an operator may lower the configured cap, never raise it
    capped = settings.replay_rate if rate is None else min(rate, settings.replay_rate)
    try:
        sel = Selection(type_, _ms(since), _ms(until), tuple(ids or ()))
        asyncio.run(_run(settings, url, source, sel, dry_run, key, capped))
    except (BackendUnavailable, BackendError) as exc:  # Redis or the store unreachable: no traceback
        console.print(f"[red]error:[/red] cannot replay: {exc}")
        raise typer.Exit(2) from None
    except EventStreamError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        console.print("[yellow]stopped[/yellow]; the events replayed so far stay replayed")
        raise typer.Exit(130) from None
    except Exception as exc:  # anything else: say so, no traceback
        console.print(f"[red]error:[/red] cannot replay: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None


async def _run(
    settings: Settings, url: str, source: Source, sel: Selection, dry_run: bool, key: str | None, rate: float
) -> None:
    from eventstream.auth import trail
    from eventstream.backends import open_backends
    from eventstream.replay import dead as dlq
    from eventstream.replay import engine as replay

    async with open_backends(settings, url) as b:
        broker, store = b.broker, b.store
        if dry_run:
            preview = await (
                replay.preview_history(store, sel)
                if source is Source.history
                else dlq.preview_matching(broker, sel)
            )
            typer.echo(f"would replay {preview.matched} event(s) from {source.value}")
            for event_id in preview.sample:
                typer.echo(f"  {event_id}")
            for event_id in preview.not_found:
                console.print(f"[yellow]not found:[/yellow] {event_id}")
            return
        total, duplicates, cursor = 0, 0, None
        pacer = replay.Pacer(rate)  # one pace for the whole run
        while True:
            if source is Source.history:
                page = await replay.replay_history(
                    broker, store, sel, rate=rate, limit=replay.MAX_LIMIT, cursor=cursor,
                    dedupe_window_ms=int(settings.dedupe_window * 1000), request_key=key, pacer=pacer,
                )  # fmt: skip
            else:
                page = await dlq.replay_matching(
                    broker, sel, rate=rate, limit=replay.MAX_LIMIT, cursor=cursor, pacer=pacer
                )
            total += page.replayed
            duplicates += page.duplicates
            for event_id in page.not_found:
                console.print(f"[yellow]not found:[/yellow] {event_id}")
            if source is Source.history and sel.ids:
                for new, old in page.events:
                    typer.echo(f"{old} -> {new}")
            cursor = page.next_cursor
            if cursor is None:
                break
            console.print(f"… {total} replayed")
        trail.record(
            f"replay.{source.value}",
            target=_describe(sel),
            outcome="ok",
            key_id="cli",
            key_name="cli",
            replayed=total,
            duplicates=duplicates,
            via="cli",
        )
        extra = f" ({duplicates} already replayed under this key)" if duplicates else ""
        typer.echo(f"replayed {total} event(s) from {source.value}{extra}")


def _describe(sel: Selection) -> str:
    """The selection, for the audit trail: what an operator chose to replay."""
    parts = [f"type={sel.type}"] if sel.type else []
    parts += [f"since_ms={sel.since_ms}"] if sel.since_ms is not None else []
    parts += [f"until_ms={sel.until_ms}"] if sel.until_ms is not None else []
    parts += [f"ids={len(sel.ids)}"] if sel.ids else []
    return " ".join(parts) or "all"
