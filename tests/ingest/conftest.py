"""In-process publishing (eventstream.ingest.publish): an app whose publisher uses the
test's settings, its connections closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventstream import EventStream
from eventstream.settings import Settings
from tests.support.publishing import publishing


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[EventStream]:
    """An app publishing with the test's settings (its own key prefix)."""
    async with publishing(settings) as a:
        yield a
