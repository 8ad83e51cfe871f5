"""Checks ``eventstream up`` and ``eventstream api`` make before they start anything.

A taken port is refused at once (rather than after Redis and the workers have
started), and a non-loopback address with no API key is refused unless
``--insecure``: anyone who could reach the port could post, read, replay and delete.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

import typer

from eventstream.cli.common import console

if TYPE_CHECKING:
    from eventstream.settings import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_free_or_exit(host: str, port: int) -> None:
    """Refuse a port that is taken before anything is started; bound as uvicorn binds it."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        console.print(
            f"[red]error:[/red] cannot listen on {host}:{port}: {reason} (another `eventstream up` "
            "may be running there); choose another port with --port, e.g. --port 8001"
        )
        raise typer.Exit(2) from None


def refuse_without_keys(settings: Settings, host: str, insecure: bool, url: str | None = None) -> None:
    """A non-loopback address with no API key is refused unless --insecure."""
    from eventstream.backends import open_broker

    async def any_keys() -> bool:
        async with open_broker(settings, url) as broker:
            return await broker.any_keys()

    try:
        keys_exist = asyncio.run(any_keys())
    except Exception as exc:
        if insecure:
            return
        console.print(
            f"[red]error:[/red] listening on {host} needs API keys, and Redis cannot be reached to "
            f"check for them ({type(exc).__name__}); fix Redis, or pass --insecure"
        )
        raise typer.Exit(2) from None
    if keys_exist:
        return
    if insecure:
        console.print(
            f"[yellow]warning:[/yellow] --insecure: listening on {host} with no API key, so anyone who "
            "can reach the port may post, read, replay and delete; create a key with "
            "`eventstream keys create` to require keys"
        )
        return
    console.print(
        f"[red]error:[/red] refusing to listen on {host} (not a loopback address) with no API key: "
        "anyone who can reach the port could post, read, replay and delete. Create a key first "
        "(`eventstream keys create --name NAME --scope admin`), listen on 127.0.0.1, or pass --insecure"
    )
    raise typer.Exit(2)
