"""Hostile handlers, imported by REAL worker processes
(``python -m eventstream worker tests.support.apps.hostile:app``): each misbehaves in one way
a handler author can, the type naming how. ``OK`` succeeds at once."""

from __future__ import annotations

import asyncio
import sys

from eventstream import Event, EventStream, Retry

app = EventStream("hostile")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


@app.handler("OK")
async def ok(event: Event) -> None:
    return None


@app.handler("SURROGATE", max_attempts=1)
async def surrogate(event: Event) -> None:
    raise FileNotFoundError("no such file: 'report-\udcff.csv'")  # a file name that is not UTF-8


@app.handler("SYS_EXIT", max_attempts=1)
async def sys_exit(event: Event) -> None:
    sys.exit(3)


@app.handler("SYS_EXIT_SYNC", max_attempts=1)
def sys_exit_sync(event: Event) -> None:
    sys.exit(4)


@app.handler("KEYBOARD_INTERRUPT", max_attempts=1)
async def keyboard_interrupt(event: Event) -> None:
    raise KeyboardInterrupt


@app.handler("RAISING_STR", max_attempts=1)
async def raising_str(event: Event) -> None:
    raise BadStr()


@app.handler("RETRY_INFINITE", max_attempts=2)
async def retry_infinite(event: Event) -> None:
    if event.attempt == 1:
        raise Retry(delay=float("inf"))


@app.handler("RETRY_HUGE", max_attempts=2)
async def retry_huge(event: Event) -> None:
    if event.attempt == 1:
        raise Retry(delay=1e18)


@app.handler("IGNORES_CANCEL", max_attempts=1, timeout=0.3)
async def ignores_cancel(event: Event) -> None:
    while True:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


@app.handler("HUGE_MESSAGE", max_attempts=1)
async def huge_message(event: Event) -> None:
    raise RuntimeError("x" * 1_000_000)
