"""GET /metrics/history, and the API's own sampler (a task of its lifespan)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from structlog.testing import capture_logs

from eventstream.ingest.accept import now_ms
from eventstream.ops import history
from tests.support.asgi import Api, assert_problem, running
from tests.support.factories import failing_app, make_settings
from tests.support.servers import closed_port
from tests.support.waiting import wait_until

STEP = history.STEP_S * 1000
TTL = 10_000


def sampler_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == history.TASK_NAME]


async def test_after_a_worker_ran_the_history_shows_its_rates_and_gauges(api: Api) -> None:
    # steps ahead of the API's own sampler, so that these two samples are the test's
    step = history.step_of(now_ms()) + 3 * STEP
    assert await history.record(api.broker, step + 500, TTL)
    for i in range(4):
        await api.accepted("OK", {"n": i})
    await api.accepted("PERM", {})
    await api.burst(failing_app())
    assert await history.record(api.broker, step + STEP + 500, TTL)

    r = await api.client.get("/metrics/history", params={"window": 60})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["stepSeconds"] == 5
    # before them: the API's own sample of this step, if it took one yet, and gaps
    *earlier, before, after = body["points"]
    assert len(earlier) in (0, 3)
    assert before["rates"] is None
    assert after == {
        "t": history_iso(step + STEP),
        "rates": {"received": 1.0, "processed": 0.8, "failed": 0.2, "retried": 0.0, "deadLettered": 0.2},
        "gauges": {"queued": 0, "pending": 0, "scheduled": 0, "dlq": 1, "workers": 0, "oldestWaitingMs": 0},
    }
    doc = api.app.openapi()
    schema = {"$ref": "#/components/schemas/MetricsHistory", "components": doc["components"]}
    assert [e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(body)] == []
    # the default window (900 s) ends with the same points
    assert (await api.client.get("/metrics/history")).json()["points"][-2:] == [before, after]


def history_iso(ms: int) -> str:
    from eventstream.event import ms_to_iso

    return ms_to_iso(ms)


async def test_an_empty_history_is_no_points(api: Api, redis: Any) -> None:
    for task in sampler_tasks():  # the API's sampler stopped, and what it wrote gone
        task.cancel()
    await redis.delete(api.broker.keys.history)
    r = await api.client.get("/metrics/history?window=5")
    assert r.status_code == 200
    assert r.json() == {"stepSeconds": 5, "points": []}


@pytest.mark.parametrize("window", ["0", "4", "1201", "-5", "abc", "1e3", "", "900.5", "9" * 40])
async def test_a_bad_window_is_422(api: Api, window: str) -> None:
    r = await api.client.get(f"/metrics/history?window={window}")
    assert_problem(r, 422, "window")


async def test_an_unknown_parameter_is_422(api: Api) -> None:
    assert_problem(await api.client.get("/metrics/history?windw=60"), 422, "windw")


async def test_the_api_samples_in_the_background_and_stops_at_shutdown(
    settings: Any, redis: Any, prefix: str
) -> None:
    async with running(settings) as api:
        [task] = sampler_tasks()

        async def sampled() -> bool:
            return bool(await redis.xlen(api.broker.keys.history))

        await wait_until(sampled, within=history.STEP_S, what="the API's first sample")
        r = await api.client.get("/metrics/history?window=60")
        [point] = r.json()["points"]
        assert point["gauges"]["queued"] == 0
        assert not task.done()
    assert task.done()
    assert sampler_tasks() == []


async def test_with_redis_unreachable_the_sampler_lives_logs_once_and_stops(
    prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(f"redis://127.0.0.1:{closed_port()}", prefix, tmp_path)
    with capture_logs() as logs:
        async with running(settings) as api:
            [task] = sampler_tasks()

            def warned() -> bool:
                return any("history" in e["event"] for e in logs)

            await wait_until(warned, within=history.STEP_S, what="the sampler's warning")
            await asyncio.sleep(1.0)
            assert not task.done()
            assert_problem(await api.client.get("/metrics/history"), 503)
    assert task.done()
    [warning] = [e for e in logs if "history" in e["event"]]
    assert warning["log_level"] == "warning"
    assert "redis unreachable" in warning["event"]
