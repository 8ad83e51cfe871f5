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


def redis_url_or_exit(settings: Settings) -> str:
    """EVENTSTREAM_REDIS_URL, else the embedded server that `eventstream up` runs in the data dir."""
    from eventstream.embedded import running_url

    url = settings.redis_url or running_url(settings.data_dir / "redis")
    if not url:
        console.print(
            "[red]error:[/red] set EVENTSTREAM_REDIS_URL, or run this beside `eventstream up` "
            f"(no embedded server is running in {settings.data_dir.resolve()})"
        )
        raise typer.Exit(2)
    return url
