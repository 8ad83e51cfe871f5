"""A real browser for the dashboard's tests: Playwright driving Debian's Chromium.

Playwright cannot download its own browser here, so it is given the system's
(``executable_path``): ``chromium`` on PATH, or EVENTSTREAM_CHROMIUM. Without one the
browser tests skip with a message saying how to run them, except in CI (``CI=true``),
where they fail: scripts/test installs Chromium there.

``Page`` wraps a Playwright page and fails the test on anything the browser reports
against the page: a console error, a Content-Security-Policy violation, an uncaught
script error, a request the page made that failed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HOW = (
    "the dashboard's browser tests need Chromium and Playwright: `apt-get install chromium` "
    "(or set EVENTSTREAM_CHROMIUM to a Chromium binary) and the dev extras (`scripts/test` installs both)"
)
T = TypeVar("T")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard"


def chromium() -> str:
    """The Chromium to drive; skips the test (fails it in CI) when there is none."""
    found = (
        os.environ.get("EVENTSTREAM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found = None
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(HOW)
    pytest.skip(HOW)


def launched() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose complaints are collected: ``assert_clean()`` fails on any."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.complaints: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.complaints.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._failed)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            self.complaints.append(f"console {message.type}: {message.text}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:  # a navigation that replaced a pending request
            self.complaints.append(f"request failed: {request.url} {failure}")

    def assert_clean(self, *allowed: str) -> None:
        left = [c for c in self.complaints if not any(a in c for a in allowed)]
        assert not left, left

    def shoot(self, name: str) -> None:
        """A screenshot for the docs, when EVENTSTREAM_SCREENSHOTS=1 (scripts/screenshots)."""
        if os.environ.get("EVENTSTREAM_SCREENSHOTS") == "1":
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from a browser test: Playwright's sync API keeps an event
    loop running in the test's thread, so the coroutine gets a thread of its own."""
    result: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
