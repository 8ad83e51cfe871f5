"""Hostile handlers against real processes, table-driven: for each, the event ends where
it should with a readable reason, the worker lives on, and an ordinary event sent right
after is processed within a second. Then SIGTERM stops the worker although a handler
that ignores cancellation still runs in it.

The figures (how long each case took to end, how long the ordinary event after it
took) are printed as a ``GUARANTEES ...`` line: ``pytest tests/faults -s | grep GUARANTEES``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest

from tests.support.checker import Figures, figures_file
from tests.support.processes import Cluster
from tests.support.waiting import wait_for

APP = "tests.support.apps.hostile:app"
MAX_DELAY_S = 1.0  # EVENTSTREAM_RETRY_MAX_DELAY here: caps Retry(delay=inf / 1e18)
CANCEL_GRACE_S = 0.3
SHUTDOWN_GRACE_S = 2.0


@dataclass(frozen=True)
class Case:
    type: str
    status: str  # where the event ends
    reason: str = ""  # how the DLQ reason starts
    attempts: int = 1


CASES = [
    Case("SURROGATE", "dead", "FileNotFoundError: no such file: 'report-\\udcff.csv'"),
    Case("SYS_EXIT", "dead", "SystemExit: 3"),
    Case("SYS_EXIT_SYNC", "dead", "SystemExit: 4"),
    Case("KEYBOARD_INTERRUPT", "dead", "KeyboardInterrupt"),
    Case("RAISING_STR", "dead", "BadStr: <the exception's __str__ raised RuntimeError>"),
    Case("RETRY_INFINITE", "processed", attempts=2),
    Case("RETRY_HUGE", "processed", attempts=2),
    Case(
        "IGNORES_CANCEL",
        "dead",
        "TimeoutError: handler took longer than its timeout of 0.3s and ignored cancellation for 0.3s; "
        "abandoned",
    ),
    Case("HUGE_MESSAGE", "dead", "RuntimeError: xxxxxxxx"),
]


def send(client: httpx.Client, type_: str) -> str:
    r = client.post("/events", json={"type": type_, "payload": {}})
    assert r.status_code == 202, r.text
    event_id: str = r.json()["eventId"]
    return event_id


def status_of(client: httpx.Client, event_id: str) -> dict[str, object]:
    r = client.get(f"/events/{event_id}")
    assert r.status_code == 200, r.text  # never a 500, whatever the handler did
    body: dict[str, object] = r.json()
    return body


def until(
    client: httpx.Client, event_id: str, statuses: set[str], what: str, timeout: float
) -> dict[str, object]:
    def probe() -> dict[str, object] | None:
        s = status_of(client, event_id)
        return s if s["status"] in statuses else None

    found: dict[str, object] = wait_for(probe, what, timeout, 0.01)
    return found


@pytest.mark.timeout(120)
def test_every_hostile_handler_ends_with_its_reason_and_the_worker_goes_on(cluster: Cluster) -> None:
    env = {
        "EVENTSTREAM_RETRY_MAX_DELAY": str(MAX_DELAY_S),
        "EVENTSTREAM_HANDLER_CANCEL_GRACE": str(CANCEL_GRACE_S),
        "EVENTSTREAM_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S),
    }
    api = cluster.start_api(**env)
    worker = cluster.start_worker(APP, concurrency=20, **env)
    figures: dict[str, object] = {}
    with httpx.Client(base_url=api.url, timeout=10.0) as client:
        for case in CASES:
            started = time.monotonic()
            event_id = send(client, case.type)
            if case.type.startswith("RETRY_"):
                # while it waits, its next attempt is due within the cap, and shown
                seen = until(client, event_id, {"retrying"}, f"{case.type} to be retrying", 10)
                due = datetime.fromisoformat(str(seen["nextAttemptAt"]).replace("Z", "+00:00"))
                assert due.timestamp() <= time.time() + MAX_DELAY_S + 0.5, seen
            end = until(client, event_id, {"processed", "dead"}, f"{case.type} to end", 15)
            ended_s = time.monotonic() - started
            assert end["status"] == case.status, (case, end)
            assert end["attempts"] == case.attempts, (case, end)
            if case.status == "dead":
                reason = str(end["reason"])
                assert reason.startswith(case.reason), (case, reason[:300])
                assert len(reason) <= 2_100
                item = client.get(f"/failed-events/{event_id}")
                assert item.status_code == 200
                assert len(item.content) < 20_000  # capped reason and traceback, not 1 MB
            assert worker.alive, f"the worker died on {case.type}:\n{worker.logs()}"

            sent = time.monotonic()
            ok_id = send(client, "OK")
            until(client, ok_id, {"processed"}, "the next event", 5)
            next_s = time.monotonic() - sent
            assert next_s < 1.0, f"an ordinary event after {case.type} took {next_s:.2f}s"
            figures[case.type] = {"ended_s": round(ended_s, 3), "next_event_s": round(next_s, 3)}

        metrics = client.get("/metrics", headers={"Accept": "application/json"}).json()
        assert metrics["workers"] == 1  # the gauge still sees the live worker
        dead = sum(c.status == "dead" for c in CASES)
        assert (metrics["deadLettered"], metrics["processed"]) == (dead, len(CASES) - dead + len(CASES))

        # A handler that ignores its cancellation is running when SIGTERM arrives: the
        # worker stops anyway, within its grace period and the cancellation attempts.
        send(client, "IGNORES_CANCEL")
        wait_for(lambda: bool(worker.log_events("worker started")), "the worker to start", 10)
        time.sleep(0.1)
    stop_started = time.monotonic()
    code = cluster.stop(worker, timeout=30)
    stop_s = time.monotonic() - stop_started
    figures["sigterm_with_a_stubborn_handler_s"] = round(stop_s, 2)
    assert code == 0, worker.logs()
    assert stop_s < SHUTDOWN_GRACE_S + 5, "the stop waited on the stubborn handler past the grace period"
    assert not worker.log_events("cannot record outcomes; stopping")
    Figures("hostile handlers", figures).report(figures_file())
