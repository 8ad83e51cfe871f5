"""Tracing in REAL processes: with no provider set by the application, each process
builds one from the standard OTEL_* variables (here the SDK's console exporter)."""

from __future__ import annotations

import httpx

from tests.support.processes import Cluster
from tests.support.waiting import wait_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
APP = "tests.support.apps.logs:app"


def test_api_and_worker_export_the_trace_of_a_post(cluster: Cluster) -> None:
    otel = {"EVENTSTREAM_TRACING": "true", "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "shop"}
    api = cluster.start_api(**otel)
    r = httpx.post(
        f"{api.url}/events",
        json={"type": "FLAKY", "payload": {"order": "C-3"}},
        headers={"traceparent": TRACEPARENT},
    )
    assert r.status_code == 202, r.text
    worker = cluster.spawn("worker", ["worker", APP, "--burst"], {**cluster.env(), **otel})
    assert cluster.wait_exit(worker, 60.0) == 0, worker.logs()
    cluster.stop(api.proc)  # flushes its spans

    published = api.proc.stdout_path.read_text()
    assert '"name": "eventstream.publish FLAKY"' in published
    assert f'"trace_id": "0x{TRACE_ID}"' in published
    handled = worker.stdout_path.read_text()
    assert handled.count('"name": "eventstream.handle FLAKY"') == 2  # the failed try and the retry
    assert handled.count(f'"trace_id": "0x{TRACE_ID}"') >= 2
    assert '"service.name": "shop"' in handled
    assert '"eventstream.outcome": "retry"' in handled
    assert '"eventstream.outcome": "processed"' in handled


def test_a_missing_exporter_is_reported_and_the_worker_still_runs(cluster: Cluster) -> None:
    env = {**cluster.env(), "EVENTSTREAM_TRACING": "true", "OTEL_TRACES_EXPORTER": "zipkin_json"}
    worker = cluster.spawn("worker", ["worker", APP, "--burst"], env)
    assert cluster.wait_exit(worker, 60.0) == 0, worker.logs()
    [warning] = wait_for(
        lambda: worker.log_events("tracing: span exporter not installed, spans are dropped"), "warning"
    )
    assert warning["exporter"] == "zipkin_json"
    assert warning["level"] == "warning"
