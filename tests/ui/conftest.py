"""The dashboard's fixtures: a real browser (tests/support/browser.py) per session, a
fresh browser context (no cookies) per test, and REAL API and worker processes
(tests/support/processes.py) for it to look at."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.browser import Watched, launched
from tests.support.processes import Api, Cluster, api_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser per module of browser tests: Playwright's sync API keeps an event
    loop running in the test thread while it is started, and no async test can run
    then; the browser closes when its module's tests are done."""
    yield from launched()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Watched]:
    """A page in a fresh context (its own cookies), at 1280x800, failing on complaints."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


@pytest.fixture
def live(cluster: Cluster) -> Iterator[Api]:
    """An API process; stopped with SIGTERM (exit code 0 asserted) after the test."""
    with api_process(cluster) as a:
        yield a


@pytest.fixture
def client(live: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30.0) as c:
        yield c
