"""What every ``eventstream`` subcommand shares: the Typer app, the console, settings loading."""

from __future__ import annotations

import typer
from rich.console import Console

from eventstream.errors import EventStreamError
from eventstream.settings import Settings, load_settings

cli = typer.Typer(
    name="eventstream",
    help="EventStream: accept JSON events over HTTP, process them with your Python handlers, "
    "durably, on Redis Streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ValueError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(exc: EventStreamError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)
