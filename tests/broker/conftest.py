"""The broker tests drive the scripts directly and check the whole state afterwards
(tests/support/broker.py, tests/support/conservation.py)."""

from __future__ import annotations

import pytest

from eventstream.broker import Keys
from eventstream.settings import Settings


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)
