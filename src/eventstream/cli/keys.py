"""``eventstream keys``: create, list and revoke API keys, straight in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from eventstream.cli.common import (
    Command,
    CommandGroup,
    DataDirOpt,
    cli,
    console,
    fail,
    redis_url_or_exit,
    settings_or_exit,
)
from eventstream.errors import BackendError, BackendUnavailable, EventStreamError

if TYPE_CHECKING:
    from eventstream.auth.apikeys import ApiKey, KeyRegistry
    from eventstream.settings import Settings

keys_cli = typer.Typer(
    cls=CommandGroup,
    help="API keys: create (the key is shown once), list, revoke. Talks to Redis directly.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
cli.add_typer(keys_cli, name="keys")

T = TypeVar("T")
CLI_ACTOR = ("cli", "cli")


def _run(settings: Settings, action: Callable[[KeyRegistry], Awaitable[T]]) -> T:
    from eventstream.auth.apikeys import KeyRegistry
    from eventstream.backends import open_broker

    url = redis_url_or_exit(settings)

    async def go() -> T:
        async with open_broker(settings, url) as broker:
            return await action(KeyRegistry(broker))

    try:
        return asyncio.run(go())
    except (BackendUnavailable, BackendError) as exc:  # "cannot reach Redis: ..."
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except EventStreamError as exc:
        raise fail(exc) from None


def _settings(data_dir: Path | None) -> Settings:
    from eventstream.logs import AUDIT_FILE, configure

    settings = settings_or_exit(data_dir=data_dir)
    configure(settings.log_level, settings.log_format, audit_file=settings.data_dir / AUDIT_FILE)
    return settings


@keys_cli.command("create")
def create(
    name: Annotated[str, typer.Option(metavar="NAME", help="What the key is for, e.g. the calling service.")],
    scope: Annotated[
        str, typer.Option(metavar="SCOPE", help="ingest (POST events), read (GET), or admin (everything).")
    ],
    rate: Annotated[
        str | None,
        typer.Option(
            metavar="RATE", help="Events per second this key may send, e.g. 200 or 200/s (default: no limit)."
        ),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(metavar="N", help="Events at once (default: one second's worth of --rate)."),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            metavar="NAMESPACE",
            help="Idempotency namespace shared with the other keys created with it (a rotation, "
            "one team's services); default: the key has its own.",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    from eventstream.auth import trail
    from eventstream.auth.apikeys import parse_rate

    settings = _settings(data_dir)
    try:
        per_s = None if rate is None else parse_rate(rate)
    except EventStreamError as exc:
        raise fail(exc) from None
    key, token = _run(settings, lambda reg: reg.create(name, scope, per_s, burst, namespace))
    trail.record(
        "key.created",
        target=key.id,
        outcome="ok",
        key_id=CLI_ACTOR[0],
        key_name=CLI_ACTOR[1],
        new_key_name=key.name,
        scope=key.scope,
        via="cli",
    )
    limit = f"{key.rate:g} events/s, burst {key.burst}" if key.rate else "no rate limit"
    shared = f", namespace {key.namespace}" if key.namespace else ""
    console.print(f"[green]created[/green] key {key.id} ({key.name}, scope {key.scope}, {limit}{shared})")
    console.print("Store it now: it is shown only this once. Send it as `Authorization: Bearer <key>`.")
    typer.echo(token)


@keys_cli.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List every key: id, name, scope, rate, created, last used, revoked (never the secret)."""
    settings = _settings(data_dir)
    keys = _run(settings, lambda reg: reg.list())
    if as_json:
        import msgspec

        typer.echo(msgspec.json.encode([k.to_json() for k in keys]).decode())
        return
    _print(keys)


def _print(keys: list[ApiKey]) -> None:
    if not keys:
        console.print("no API keys: an API on loopback accepts anonymous requests")
        return
    table = Table()
    for col in ("id", "name", "scope", "rate", "created", "last used", "revoked"):
        table.add_column(col, no_wrap=col == "id")
    for k in keys:
        j = k.to_json()
        rate = f"{k.rate:g}/s (burst {k.burst})" if k.rate else "-"
        table.add_row(
            k.id, k.name, k.scope, rate, j["createdAt"], j["lastUsedAt"] or "-", j["revokedAt"] or "-"
        )
    Console().print(table)


@keys_cli.command("revoke", cls=Command)
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id (see `eventstream keys list`).")],
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a key: every API process refuses it from its next request on."""
    from eventstream.auth import trail

    settings = _settings(data_dir)
    key, changed = _run(settings, lambda reg: reg.revoke(key_id))
    trail.record(
        "key.revoked",
        target=key.id,
        outcome="ok" if changed else "already revoked",
        key_id=CLI_ACTOR[0],
        key_name=CLI_ACTOR[1],
        revoked_key_name=key.name,
        via="cli",
    )
    console.print(f"revoked key {key.id} ({key.name})" if changed else f"key {key.id} was already revoked")
