"""Worker tests run a worker in-process on the session's Redis (tests/support/workers.py);
``mk`` builds settings for the test's prefix with some changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventstream.settings import Settings
from tests.support.factories import SettingsFactory, make_settings


@pytest.fixture
def mk(redis_url: str, prefix: str, tmp_path: Path) -> SettingsFactory:
    """Settings for this test's prefix with overrides: ``mk(visibility_timeout=0.2)``."""

    def build(**overrides: Any) -> Settings:
        return make_settings(redis_url, prefix, tmp_path, **overrides)

    return build
