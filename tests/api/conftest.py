"""The real app (create_app) inside its lifespan, driven over ASGI by httpx.

``api`` and ``make_api(**overrides)`` (tests/conftest.py) build it from the test's
settings (its own key prefix, its SQLite store in tmp_path); ``down_api`` is one whose
Redis URL is a closed port. The app and its helpers are in tests/support/asgi.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.asgi import Api, running
from tests.support.factories import make_settings
from tests.support.servers import closed_port


@pytest.fixture
async def down_api(prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app with Redis unreachable (nothing listens on its port)."""
    settings = make_settings(f"redis://127.0.0.1:{closed_port()}", prefix, tmp_path)
    async with running(settings) as a:
        yield a
