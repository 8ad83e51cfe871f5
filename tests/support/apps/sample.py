"""Importable apps for the load_app tests."""

from __future__ import annotations

from eventstream.app import EventStream
from eventstream.event import Event

app = EventStream("sample")
other = EventStream("other")
not_an_app = {"name": "just a dict"}


@app.handler("A")
async def handle(event: Event) -> None:
    return None
