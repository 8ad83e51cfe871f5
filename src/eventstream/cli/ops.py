"""Operator commands over the HTTP API: ``stats``, ``dlq list|show|replay|delete``, ``events show``
(and ``replay``, in eventstream.cli.replay).

People get Rich tables; scripts pass ``--json`` and get the API's JSON. See
:mod:`eventstream.cli.client` for the URL, the key and the exit codes.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from eventstream.cli.client import (
    DEFAULT_URL,
    ApiClient,
    ApiError,
    JsonOpt,
    KeyOpt,
    UrlOpt,
    exit_for,
    iso,
)
from eventstream.cli.common import Command, CommandGroup, cli, console

out = Console(highlight=False)

STATUS_STYLE = {
    "queued": "cyan",
    "processing": "blue",
    "retrying": "yellow",
    "processed": "green",
    "dead": "red",
}


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False))


def _fields(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        if value is not None:
            table.add_row(name, value if isinstance(value, Text) else str(value))
    return table


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


# ---- stats --------------------------------------------------------------------------

RATES = (
    ("processedPerSecond", "processed"),
    ("receivedPerSecond", "received"),
    ("failedPerSecond", "failed"),
)


def _sample(client: ApiClient) -> tuple[float, dict[str, int]]:
    metrics: dict[str, int] = client.json("GET", "/metrics")
    return time.monotonic(), metrics


def _snapshot(
    before: tuple[float, dict[str, int]] | None, now: tuple[float, dict[str, int]]
) -> dict[str, Any]:
    """The metrics with per-second rates from the counter deltas since ``before`` (None: no rates)."""
    at, cur = now
    snap: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="seconds")}
    for rate, counter in RATES:
        if before is None or at <= before[0]:
            snap[rate] = None
        else:
            # a counter that went down was reset (a new Redis): no rate this time
            delta = cur.get(counter, 0) - before[1].get(counter, 0)
            snap[rate] = round(delta / (at - before[0]), 1) if delta >= 0 else None
    snap.update(cur)
    return snap


def _stats_view(snap: dict[str, Any], url: str, error: str | None = None) -> Group | Table:
    table = Table(title=f"EventStream at {url}   {snap['at']}", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")

    def rate(name: str) -> str:
        value = snap.get(name)
        return "…" if value is None else f"{value:,.1f}/s"

    def count(name: str) -> str:
        return f"{snap.get(name, 0):,}"

    def seconds(name_ms: str) -> str:
        return f"{snap.get(name_ms, 0) / 1000:,.1f}s"

    rows = [
        ("throughput", rate("processedPerSecond"), "events processed per second"),
        ("received", rate("receivedPerSecond"), "events accepted per second"),
        ("failing", rate("failedPerSecond"), "failed handler attempts per second"),
        ("backlog", count("queued"), "queued, waiting for a worker"),
        ("in flight", count("pending"), "delivered to a worker, not settled"),
        ("retries", count("scheduled"), "waiting for their next attempt"),
        ("DLQ", count("dlq"), "dead events (eventstream dlq list)"),
        ("parked", count("parked"), "waiting behind earlier events of their ordering key"),
        ("busy keys", count("busyKeys"), "ordering keys with events in progress"),
        ("oldest parked", seconds("oldestParkedMs"), "how long the event parked longest has waited"),
        ("outbox", count("outbox"), "follow-ups on their way to their partition"),
        ("workers", count("workers"), "with a recent heartbeat"),
        ("received total", count("received"), "accepted since the start"),
        ("processed total", count("processed"), ""),
        ("failed total", count("failed"), "failed attempts"),
        ("dead-lettered total", count("deadLettered"), ""),
        ("duplicates total", count("duplicates"), "posts answered as duplicates"),
        ("emitted total", count("emitted"), "follow-ups emitted by handlers"),
    ]
    for row in rows:
        table.add_row(*row)
    if error:
        return Group(table, Text(f"error: {error}", style="red"))
    return table


@cli.command()
def stats(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON: one object per snapshot, one per line.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, metavar="SECONDS", help="Seconds between snapshots.")
    ] = 1.0,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """A live view of throughput, backlog, in-flight, retries and the DLQ, refreshed every second.

    Rates come from the change of the counters between two snapshots, so `--once`
    takes two, one interval apart. Ctrl-C ends the live view.
    """
    with ApiClient(url, api_key) as client:
        try:
            before = _sample(client)
            if once or as_json:
                time.sleep(interval)
                now = _sample(client)
                _print_snapshot(_snapshot(before, now), client.url, as_json)
                while not once:
                    time.sleep(interval)
                    before, now = now, _sample(client)
                    _print_snapshot(_snapshot(before, now), client.url, as_json)
                return
        except ApiError as exc:
            raise exit_for(exc) from None
        except KeyboardInterrupt:
            return
        _live(client, before, interval)


def _print_snapshot(snap: dict[str, Any], url: str, as_json: bool) -> None:
    if as_json:
        _echo_json(snap)
    else:
        out.print(_stats_view(snap, url))


def _live(client: ApiClient, before: tuple[float, dict[str, int]], interval: float) -> None:
    from rich.live import Live

    snap = _snapshot(None, before)
    try:
        with Live(_stats_view(snap, client.url), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    now = _sample(client)
                except ApiError as exc:  # keep watching: the API may come back
                    live.update(_stats_view(snap, client.url, exc.message), refresh=True)
                    continue
                snap = _snapshot(before, now)
                before = now
                live.update(_stats_view(snap, client.url), refresh=True)
    except KeyboardInterrupt:
        pass


# ---- dlq ----------------------------------------------------------------------------

dlq = typer.Typer(
    cls=CommandGroup,
    help="Browse, replay and delete dead events (the dead-letter queue).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli.add_typer(dlq, name="dlq")

TypeOpt = Annotated[str | None, typer.Option("--type", metavar="TYPE", help="Only events of this type.")]


def _no_dead(event_id: str) -> str:
    return f"no such event in the DLQ: {event_id}"


@dlq.command("list")
def dlq_list(
    type_: TypeOpt = None,
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="Most dead events to show, newest first.")
    ] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """List dead events, newest first: id, type, attempts, when it failed and why."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    with ApiClient(url, api_key) as client:
        try:
            while len(items) < limit:
                params = {"limit": min(limit - len(items), 1000), "type": type_, "cursor": cursor}
                page = client.json("GET", "/failed-events", params)
                items.extend(page["items"])
                cursor = page["nextCursor"]
                if not cursor:
                    break
        except ApiError as exc:
            raise exit_for(exc) from None
    if as_json:
        _echo_json({"items": items, "nextCursor": cursor})
        return
    if not items:
        out.print(f"no dead events of type {type_}" if type_ else "the DLQ is empty")
        return
    table = Table(title=f"dead events{f' of type {type_}' if type_ else ''}, newest first")
    table.add_column("id", no_wrap=True)
    table.add_column("type")
    table.add_column("attempts", justify="right")
    table.add_column("failed at", no_wrap=True)
    table.add_column("reason", min_width=30)
    for item in items:
        reason = (item.get("reason") or "").splitlines()[0] if item.get("reason") else ""
        failed_at = item["failedAt"].replace("T", " ")[:19]  # to the second, for people
        table.add_row(item["id"], item["type"], str(item["attempts"]), failed_at, reason)
    out.print(table)
    more = "; more with a higher --limit" if cursor else ""
    out.print(f"{len(items)} shown{more}")


@dlq.command("show", cls=Command)
def dlq_show(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The dead event's id.")],
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """One dead event: its reason, traceback, attempts and payload."""
    with ApiClient(url, api_key) as client:
        try:
            item = client.json("GET", f"/failed-events/{event_id}", not_found=_no_dead(event_id))
        except ApiError as exc:
            raise exit_for(exc) from None
    if as_json:
        _echo_json(item)
        return
    out.print(
        _fields(
            f"dead event {item['id']}",
            [
                ("type", item["type"]),
                ("status", _status(item["status"])),
                ("attempts", item["attempts"]),
                ("reason", item["reason"]),
                ("received at", item.get("receivedAt")),
                ("first failed at", item.get("firstFailedAt")),
                ("failed at", item.get("failedAt")),
                ("source", item.get("source")),
                ("severity", item.get("severity")),
                ("timestamp", item.get("timestamp")),
            ],
        )
    )
    out.print(Text("payload", style="bold"))
    out.print(JSON.from_data(item["payload"]))
    if item.get("traceback"):
        out.print(Text("traceback", style="bold"))
        out.print(Text(item["traceback"]))


@dlq.command("replay", cls=Command)
def dlq_replay(
    event_id: Annotated[str | None, typer.Argument(metavar="ID", help="The dead event to replay.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay every dead event, or those the filters below choose.")
    ] = False,
    type_: TypeOpt = None,
    since: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="With --all: failed at or after this time.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(metavar="TIME", help="With --all: failed before this time.")
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--id", metavar="ID", help="With --all: only this dead event (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --all: only count what would be replayed.")
    ] = False,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1, metavar="N", help="With --all: events/s, at most the API's EVENTSTREAM_REPLAY_RATE."
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Send dead events back to the queue: the same id, attempts counted afresh.

    Give one ID, or --all for every dead event, optionally chosen by --type, --since,
    --until (on the time of the last failure) and --id, at a capped --rate. --dry-run
    counts what would go and sends nothing.
    """
    if (event_id is None) == (not all_):
        raise typer.BadParameter("give either an event ID or --all", param_hint="ID / --all")
    given = {"--type": type_, "--since": since, "--until": until, "--id": ids, "--rate": rate}
    given["--dry-run"] = dry_run or None
    for name, value in given.items():
        if value is not None and not all_:
            raise typer.BadParameter(f"{name} goes with --all", param_hint=name)
    filters = {"type": type_, "since": iso(since), "until": iso(until), "id": ids or None, "rate": rate}
    with ApiClient(url, api_key) as client:
        try:
            if all_ and dry_run:
                body = client.json("POST", "/failed-events/replay", {**filters, "dry_run": "true"})
            elif all_:
                body = {"replayed": 0, "notFound": []}
                for page in client.replay_pages("/failed-events/replay", filters):
                    body["replayed"] += page["replayed"]
                    body["notFound"] += page.get("notFound", [])
                    if page.get("nextCursor"):
                        console.print(f"… {body['replayed']} replayed")
            else:
                body = client.json(
                    "POST", f"/failed-events/{event_id}/replay", not_found=_no_dead(event_id or "")
                )
        except ApiError as exc:
            raise exit_for(exc) from None
        except KeyboardInterrupt:
            console.print("[yellow]stopped[/yellow]; the events replayed so far stay replayed")
            raise typer.Exit(130) from None
    if as_json:
        _echo_json(body)
    elif all_ and dry_run:
        out.print(f"would replay {body['matched']} dead event(s)")
        for sample in body["sample"]:
            out.print(f"  {sample}")
        for missing in body["notFound"]:
            out.print(f"not found: {missing}")
    elif all_:
        what = f"dead event(s) of type {type_}" if type_ else "dead event(s)"
        out.print(f"replayed {body['replayed']} {what}: back in the queue, attempts counted afresh")
        for missing in body["notFound"]:
            out.print(f"not found: {missing}")
    else:
        out.print(f"replayed {event_id}: back in the queue, attempts counted afresh")


@dlq.command("delete", cls=Command)
def dlq_delete(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The dead event to delete.")],
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Delete one dead event for good (it is counted in `deleted`)."""
    with ApiClient(url, api_key) as client:
        try:
            client.request("DELETE", f"/failed-events/{event_id}", not_found=_no_dead(event_id))
        except ApiError as exc:
            raise exit_for(exc) from None
    out.print(f"deleted {event_id} from the DLQ")


# ---- events -------------------------------------------------------------------------

events = typer.Typer(
    cls=CommandGroup, help="Look up accepted events.", no_args_is_help=True, rich_markup_mode=None
)
cli.add_typer(events, name="events")


@events.command("show", cls=Command)
def events_show(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The event's id.")],
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """One event in any state: status, attempts, payload, and the reason if it is dead."""
    with ApiClient(url, api_key) as client:
        try:
            item = client.json("GET", f"/events/{event_id}", not_found=f"no such event: {event_id}")
        except ApiError as exc:
            raise exit_for(exc) from None
    if as_json:
        _echo_json(item)
        return
    out.print(
        _fields(
            f"event {item['id']}",
            [
                ("type", item["type"]),
                ("status", _status(item["status"])),
                ("attempts", item["attempts"]),
                ("reason", item.get("reason")),
                ("received at", item.get("receivedAt")),
                ("processed at", item.get("processedAt")),
                ("next attempt at", item.get("nextAttemptAt")),
                ("failed at", item.get("failedAt")),
                ("source", item.get("source")),
                ("severity", item.get("severity")),
                ("timestamp", item.get("timestamp")),
                ("idempotency key", item.get("idempotencyKey")),
                ("replay of", item.get("replayOf")),
                ("ordering key", item.get("orderingKey")),
                ("emitted by", item.get("causationId")),
                ("follow-ups", ", ".join(item.get("children") or []) or None),
                ("waiting behind its key since", item.get("parkedAt")),
            ],
        )
    )
    out.print(Text("payload", style="bold"))
    out.print(JSON.from_data(item["payload"]))
