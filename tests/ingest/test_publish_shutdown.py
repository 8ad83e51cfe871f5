"""A loop that published and then shuts down closes its publisher lane without an error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventstream import EventStream
from eventstream.settings import Settings


def test_a_loop_that_published_shuts_down_without_an_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = EventStream()
    app.configure_publisher(settings)

    async def one() -> None:
        await app.publish("T", {})

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(one())
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_closing_the_publisher_after_publish_sync_logs_no_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = EventStream()
    app.configure_publisher(settings)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        app.publish_sync("T", {})
        app.close_publisher()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
