"""``eventstream db``: the store's schema (upgrade, current, check) and retention (prune)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from eventstream.cli.common import CommandGroup, DataDirOpt, cli, console, fail, settings_or_exit
from eventstream.errors import BackendError, BackendUnavailable, EventStreamError

if TYPE_CHECKING:
    from eventstream.settings import Settings
    from eventstream.store import SqlStore

T = TypeVar("T")

db = typer.Typer(
    cls=CommandGroup,
    name="db",
    help="The processed-event store: migrations and retention. "
    "Uses EVENTSTREAM_DATABASE_URL, or the SQLite file in the data dir.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli.add_typer(db)


def _with_store(settings: Settings, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    from eventstream.backends import open_store

    async def run() -> T:
        async with open_store(settings, check_schema=False) as store:  # some commands migrate it
            return await work(store)

    try:
        return asyncio.run(run())
    except (BackendUnavailable, BackendError) as exc:  # the database unreachable: say so, no traceback
        console.print(f"[red]error:[/red] database: {exc}")
        raise typer.Exit(2) from None
    except EventStreamError as exc:
        raise fail(exc) from None
    except Exception as exc:  # what the migrations raise on their own connection
        console.print(f"[red]error:[/red] database: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None


@db.command()
def upgrade(data_dir: DataDirOpt = None) -> None:
    """Apply the schema migrations this version needs (safe to run again; one process at a time)."""
    from eventstream.store import migrations

    settings = settings_or_exit(data_dir=data_dir)

    async def work(store: SqlStore) -> migrations.SchemaState:
        before = await migrations.state(store.engine)
        after = await migrations.upgrade(store.engine)
        if before.current != after.current:
            console.print(f"upgraded the schema from {before.describe()} to {after.current}")
        return after

    state = _with_store(settings, work)
    typer.echo(f"schema at {state.current} (head)")


@db.command()
def current(data_dir: DataDirOpt = None) -> None:
    """Print the schema revision of the database and the one this version needs."""
    from eventstream.store import migrations

    state = _with_store(settings_or_exit(data_dir=data_dir), lambda s: migrations.state(s.engine))
    typer.echo(f"database: {state.describe()}\ncode needs: {state.head}")


@db.command()
def check(data_dir: DataDirOpt = None) -> None:
    """Exit 0 when the schema is what this version needs, 1 (saying what to run) otherwise."""
    from eventstream.store import migrations

    state = _with_store(settings_or_exit(data_dir=data_dir), lambda s: migrations.state(s.engine))
    if not state.up_to_date:
        console.print(
            f"[red]behind:[/red] schema is at {state.describe()}, code needs {state.head}: "
            "run `eventstream db upgrade`"
        )
        raise typer.Exit(1)
    typer.echo(f"schema at {state.current}: up to date")


@db.command()
def prune(
    older_than: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            show_default="EVENTSTREAM_RETENTION",
            help="Age of the rows to delete, at least the dedupe window (EVENTSTREAM_DEDUPE_WINDOW); "
            "default EVENTSTREAM_RETENTION.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only count the rows that would go.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete processed events older than the retention now, in short batches."""
    from eventstream.ops.retention import cutoff_ms
    from eventstream.ops.retention import prune as run_prune

    base = settings_or_exit(data_dir=data_dir)
    if older_than is not None and 0 < older_than < base.dedupe_window:
        console.print(
            f"[red]error:[/red] --older-than {older_than:g} s is shorter than the dedupe window "
            f"({base.dedupe_window:g} s, EVENTSTREAM_DEDUPE_WINDOW): the store's rows are what stop a "
            f"redelivered event from running twice. Use at least {base.dedupe_window:g}."
        )
        raise typer.Exit(2)
    settings = settings_or_exit(retention=older_than, data_dir=data_dir)
    if settings.retention == 0:
        console.print("retention is 0 (keep forever): nothing to prune; pass --older-than SECONDS")
        raise typer.Exit(0)
    cutoff = cutoff_ms(settings.retention)

    async def work(store: SqlStore) -> int:
        await store.ensure_schema(auto_upgrade=settings.database_url is None)
        if dry_run:
            return await store.count_matching(until_ms=cutoff)
        return await run_prune(store, cutoff, settings.retention_batch)

    count = _with_store(settings, work)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {count} processed event(s) older than {settings.retention:g} s")
