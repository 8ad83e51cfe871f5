"""Factories: settings for a test's prefix, store rows, handler apps, and events made
through a real API.

``make_settings`` fills in what every test shares (short retry delays and polls, a
5 s grace); ``row`` is a processed-event row with defaults; ``recording_app`` and
``failing_app`` are in-process handler apps; ``post`` and ``Events`` make events
through a running API process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from eventstream.app import EventStream
from eventstream.errors import PermanentError
from eventstream.event import Event
from eventstream.settings import Settings
from eventstream.store import ProcessedRow

SettingsFactory = Callable[..., Settings]


def make_settings(redis_url: str, prefix: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "prefix": prefix,
        "data_dir": data_dir,
        "retry_delay": 0.01,
        "retry_max_delay": 0.05,
        "poll_interval": 0.01,
        "shutdown_grace": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def row(event_id: str, processed_at_ms: int = 1_000, type_: str = "T", **kw: Any) -> ProcessedRow:
    values: dict[str, Any] = {
        "id": event_id,
        "type": type_,
        "payload": msgspec.json.encode({"id": event_id}).decode(),
        "source": None,
        "severity": None,
        "timestamp": None,
        "idempotency_key": None,
        "replay_of": None,
        "attempts": 1,
        "received_at_ms": processed_at_ms - 10,
        "processed_at_ms": processed_at_ms,
    }
    values.update(kw)
    return ProcessedRow(**values)


def recording_app(seen: list[Event], dead: frozenset[str] = frozenset()) -> EventStream:
    app = EventStream()

    @app.handler("*")
    async def handle(event: Event) -> None:
        seen.append(event)
        if event.type in dead:
            raise PermanentError("no")

    return app


def failing_app(broken: set[str] | None = None, seen: list[tuple[str, int]] | None = None) -> EventStream:
    """Types in ``broken`` fail: PERM at once, FLAKY after two attempts; others succeed."""
    broken = {"PERM", "OTHER", "FLAKY"} if broken is None else broken
    app = EventStream()

    @app.handler("FLAKY", max_attempts=2)
    async def flaky(event: Event) -> None:
        if seen is not None:
            seen.append((event.id, event.attempt))
        if "FLAKY" in broken:
            raise RuntimeError(f"flaky failure {event.payload.get('n')}")

    @app.handler("*")
    async def perm(event: Event) -> None:
        if seen is not None:
            seen.append((event.id, event.attempt))
        if event.type in broken:
            raise PermanentError(f"cannot handle {event.type}")

    return app


@dataclass
class Events:
    """The ids of events made through a real API: processed, refused for good, failed."""

    ok: list[str]
    perm: list[str]
    fail: list[str]

    @property
    def dead(self) -> list[str]:
        return self.perm + self.fail


def post(client: httpx.Client, type_: str, **payload: object) -> str:
    """POST one event that must be accepted; its id."""
    r = client.post("/events", json={"type": type_, "payload": payload})
    assert r.status_code == 202, r.text
    event_id: str = r.json()["eventId"]
    return event_id
