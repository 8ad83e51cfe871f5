"""``eventstream replay``: replay processed events as new ones, by filters, through the API.

A client of ``POST /replay`` like ``dlq`` is of ``/failed-events`` (see
eventstream.cli.client): it follows the API's rate-capped pages to the end, printing
its progress (Ctrl-C stops it between pages; what went, went). Dead events are
replayed by ``eventstream dlq replay``; ``--from dlq`` is kept as a deprecated spelling
of ``dlq replay --all``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from eventstream.cli.client import DEFAULT_URL, ApiClient, ApiError, KeyOpt, UrlOpt, exit_for, iso
from eventstream.cli.common import DEFAULT_REPLAY_RATE, cli, console, fail
from eventstream.errors import EventStreamError


class Source(StrEnum):
    history = "history"
    dlq = "dlq"


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a bare time on the command line is the operator's local time
        value = value.astimezone()
    return int(value.timestamp() * 1000)


def deprecated(old: str, new: str) -> None:
    """The one line an old spelling prints: which command to use instead."""
    console.print(f"[yellow]deprecated:[/yellow] `{old}` is now `{new}`", highlight=False)


@cli.command()
def replay(
    type_: Annotated[
        str | None, typer.Option("--type", metavar="TYPE", help="Only events of this type.")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="Processed at or after this time.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="Processed before this time.")
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
            help="Events/s, at most the API's EVENTSTREAM_REPLAY_RATE (the cap: "
            f"{DEFAULT_REPLAY_RATE:g} unless set).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count what would be replayed.")] = False,
    key: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="Replay nothing twice under this key (within the dedupe window): sent as Idempotency-Key.",
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    # deprecated spellings, kept for scripts: --from dlq (now `dlq replay --all`), --data-dir
    source: Annotated[Source, typer.Option("--from", hidden=True, show_default=False)] = Source.history,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", hidden=True)] = None,
) -> None:
    """Replay processed events as new events (new ids, replayOf the original), chosen by type,
    time range (processedAt) or ids, at a capped rate, through the API.

    Dead events go back with `eventstream dlq replay`.
    """
    from eventstream.replay.engine import Selection

    try:  # checked here, before anything is sent: a bad range is the operator's to fix
        Selection(type_, _ms(since), _ms(until), tuple(ids or ()))
    except EventStreamError as exc:
        raise fail(exc) from None
    if data_dir is not None:
        deprecated("replay --data-dir", "replay --url URL (replay goes through the API)")
    if source is Source.dlq:
        from eventstream.cli.ops import dlq_replay

        deprecated("replay --from dlq", "dlq replay --all")
        dlq_replay(
            None, all_=True, type_=type_, since=since, until=until, ids=ids, dry_run=dry_run, rate=rate,
            as_json=False, url=url, api_key=api_key,
        )  # fmt: skip
        return
    filters = {"type": type_, "since": iso(since), "until": iso(until), "id": ids or None, "rate": rate}
    with ApiClient(url, api_key) as client:
        try:
            if dry_run:
                _print_preview(client.json("POST", "/replay", {**filters, "dry_run": "true"}))
            else:
                _run(client, filters, bool(ids), {"Idempotency-Key": key} if key else None)
        except ApiError as exc:
            raise exit_for(exc) from None
        except KeyboardInterrupt:
            console.print("[yellow]stopped[/yellow]; the events replayed so far stay replayed")
            raise typer.Exit(130) from None


def _print_preview(body: dict[str, Any]) -> None:
    typer.echo(f"would replay {body['matched']} event(s) from history")
    for event_id in body["sample"]:
        typer.echo(f"  {event_id}")
    for event_id in body["notFound"]:
        console.print(f"[yellow]not found:[/yellow] {event_id}", highlight=False)


def _run(client: ApiClient, filters: dict[str, Any], by_ids: bool, headers: dict[str, str] | None) -> None:
    total = duplicates = 0
    for page in client.replay_pages("/replay", filters, headers):
        total += page["replayed"]
        duplicates += page.get("duplicates", 0)
        for event_id in page.get("notFound", []):
            console.print(f"[yellow]not found:[/yellow] {event_id}", highlight=False)
        if by_ids:
            for made in page.get("events", []):
                typer.echo(f"{made['replayOf']} -> {made['id']}")
        if page.get("nextCursor"):
            console.print(f"… {total} replayed")
    extra = f" ({duplicates} already replayed under this key)" if duplicates else ""
    typer.echo(f"replayed {total} event(s) from history{extra}")
