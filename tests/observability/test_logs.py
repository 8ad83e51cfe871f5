"""Structured logs of a REAL worker process: JSON lines (or readable lines) on stderr,
every line about an event carrying its id, type and attempt."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstream.broker import Broker
from tests.support.broker import put
from tests.support.processes import Cluster, Proc

APP = "tests.support.apps.logs:app"


async def run_worker(cluster: Cluster, **env: str) -> Proc:
    """A burst worker with the observability app; returns once it has exited with 0."""
    proc = cluster.spawn("worker", ["worker", APP, "--burst"], {**cluster.env(), **env})
    code = await asyncio.to_thread(cluster.wait_exit, proc, 60.0)
    assert code == 0, proc.logs()
    return proc


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be one JSON object."""
    records = []
    for line in proc.stderr_path.read_text().splitlines():
        record = json.loads(line)  # raises on any line that is not JSON
        assert isinstance(record, dict), line
        records.append(record)
    return records


def about(records: list[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event_id") == event_id]


def assert_timestamp_is_recent_utc(value: str) -> None:
    assert value.endswith("Z"), value
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=5), value


@pytest.mark.parametrize("fmt", ["json", "auto"])  # auto: stderr is a file here, so JSON
async def test_json_lines_carry_the_event_on_every_failure(
    cluster: Cluster, broker: Broker, fmt: str
) -> None:
    flaky = await put(broker, "FLAKY", {"order": "A-1"})
    broken = await put(broker, "BROKEN")
    orphan = await put(broker, "NOBODY")
    await put(broker, "CHATTY")

    records = json_lines(await run_worker(cluster, EVENTSTREAM_LOG_FORMAT=fmt))

    for r in records:
        assert {"timestamp", "level", "event"} <= r.keys(), r
        assert_timestamp_is_recent_utc(r["timestamp"])
        assert r["level"] in {"debug", "info", "warning", "error"}, r
    assert any(r["event"] == "worker started" for r in records)

    # one warning per failed try, with what failed and when it runs again
    [retry] = about(records, flaky)
    assert retry["event"] == "handler failed, retry scheduled"
    assert retry["level"] == "warning"
    assert (retry["event_type"], retry["attempt"]) == ("FLAKY", 1)
    assert retry["error"] == "ConnectionError: payment gateway timed out for A-1"
    assert isinstance(retry["retry_in_s"], float | int)
    assert retry["retry_in_s"] >= 0
    # the successful second try logs nothing at info

    first, dead = about(records, broken)
    assert (first["event"], first["level"], first["attempt"]) == (
        "handler failed, retry scheduled",
        "warning",
        1,
    )
    assert first["event_type"] == "BROKEN"
    assert dead["event"] == "dead-lettered"
    assert dead["level"] == "error"
    assert (dead["event_type"], dead["attempt"]) == ("BROKEN", 2)
    assert dead["reason"].startswith("ValueError: template 'welcome' not found")
    assert "gave up after 2 attempts" in dead["reason"]

    [no_handler] = about(records, orphan)
    assert (no_handler["event"], no_handler["level"]) == ("dead-lettered", "error")
    assert no_handler["event_type"] == "NOBODY"
    assert no_handler["attempt"] == 0  # no try ran
    assert no_handler["reason"].startswith("NoHandler:")

    # the standard library's logging and warnings go through the same renderer
    [stdlib] = [r for r in records if r.get("logger") == "thirdparty.client"]
    assert (stdlib["event"], stdlib["level"]) == ("slow answer from inventory", "warning")
    [warned] = [r for r in records if r.get("logger") == "py.warnings"]
    assert warned["level"] == "warning"
    assert "UserWarning: the old api is going away" in warned["event"]


async def test_console_lines_are_readable_and_debug_shows_successes(cluster: Cluster, broker: Broker) -> None:
    flaky = await put(broker, "FLAKY", {"order": "B-2"})
    broken = await put(broker, "BROKEN")

    proc = await run_worker(cluster, EVENTSTREAM_LOG_FORMAT="console", EVENTSTREAM_LOG_LEVEL="debug")
    lines = proc.stderr_path.read_text().splitlines()

    assert lines
    for line in lines:
        assert not line.startswith("{"), line
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "\x1b[" not in "".join(lines), "no colour codes when stderr is not a terminal"

    [dead] = [line for line in lines if broken in line and "dead-lettered" in line]
    assert "[error" in dead
    assert "event_type=BROKEN" in dead
    assert "attempt=2" in dead
    assert "ValueError" in dead

    flaky_lines = [line for line in lines if f"event_id={flaky}" in line]
    assert len(flaky_lines) == 2, flaky_lines
    failed, processed = flaky_lines
    assert "handler failed, retry scheduled" in failed
    assert "[warning" in failed
    assert "attempt=1" in failed
    assert "processed" in processed  # one line per success at debug level
    assert "[debug" in processed
    assert "attempt=2" in processed
    assert "event_type=FLAKY" in processed
    assert not [line for line in lines if "[aiosqlite]" in line], "other libraries stay at info"
