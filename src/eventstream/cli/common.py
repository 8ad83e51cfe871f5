"""What every ``eventstream`` subcommand shares: the Typer app, the console, settings loading.

Help must come fast, so a command module imports at its top only what its options need
(Typer, Rich, this module); settings, Redis, the store and the API are imported inside
the command that uses them. tests/cli/test_startup.py keeps it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from eventstream.errors import EventStreamError

if TYPE_CHECKING:
    from eventstream.settings import Settings


class CommandGroup(TyperGroup):
    """The class of every group of commands: ``typer.Typer(cls=CommandGroup)``.

    A group's own --help, when not given (``eventstream worker --help``), reads as False
    rather than None: Typer then has nothing to coerce, and does not import pydantic to
    build a validator for it (a third of the time `eventstream worker --help` takes)."""

    def get_help_option(self, ctx: typer.Context) -> TyperOption | None:  # type: ignore[override]
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


cli = typer.Typer(
    cls=CommandGroup,
    name="eventstream",
    help="EventStream: accept JSON events over HTTP, process them with your Python handlers, "
    "durably, on Redis Streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help reads as written: "[env: ...]" is text, not Rich markup
)
console = Console(stderr=True)


class _Argument(TyperArgument):
    """An argument in help as click shows one: ``ID`` or ``[ID]`` in the usage line (not
    ``{ID}``), and its metavar without a ``<str>`` label in the list of arguments."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:  # type: ignore[override]
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


class Command(TyperCommand):
    """The class of every command that takes arguments: ``@cli.command(cls=Command)``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _Argument


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
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        envvar="EVENTSTREAM_DATA_DIR",
        show_default="./data",
        metavar="DIR",
        help="The deployment's directory, where `eventstream up` keeps its embedded Redis and the "
        "SQLite store; commands beside a running `up` find its Redis there.",
    ),
]


# Settings' defaults that help shows, written out so that help needs no pydantic;
# tests/cli/test_startup.py checks them against Settings.
DEFAULT_CONCURRENCY = 256
DEFAULT_REPLAY_RATE = 1000.0


def settings_or_exit(**overrides: object) -> Settings:
    from eventstream.settings import load_settings

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
            f"[red]error:[/red] no Redis: no `eventstream up` is running with the data dir "
            f"{settings.data_dir.resolve()}. Name the one it uses with --data-dir DIR (or "
            "EVENTSTREAM_DATA_DIR), or set EVENTSTREAM_REDIS_URL",
            highlight=False,
        )
        raise typer.Exit(2)
    return url
