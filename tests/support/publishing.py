"""An app that publishes in-process (EventStream.publish) with given settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from eventstream import EventStream
from eventstream.settings import Settings


@asynccontextmanager
async def publishing(settings: Settings) -> AsyncIterator[EventStream]:
    """An app whose publisher uses ``settings``; its connections closed on leaving."""
    app = EventStream()
    app.configure_publisher(settings)
    try:
        yield app
    finally:
        await app.aclose_publisher()
