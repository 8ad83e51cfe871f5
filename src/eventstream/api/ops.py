"""GET /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from eventstream.api import schemas
from eventstream.api.deps import json, services
from eventstream.api.problems import problem
from eventstream.event import ms_to_iso
from eventstream.ingest.accept import now_ms
from eventstream.ops import history, metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus text, or a JSON summary with Accept: application/json",
    responses={
        200: {
            "description": "The metrics",
            "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
        }
    },
)
async def get_metrics(request: Request) -> Response:
    svc = services(request)
    snap = await metrics.snapshot(svc.broker, now_ms(), metrics.worker_ttl_ms(svc.settings))
    if "application/json" in request.headers.get("accept", ""):
        return json(metrics.summary(snap))
    refused = request.app.state.ingest_refused  # this process's (eventstream.api.guard.IngestRefusals)
    return Response(metrics.render_prometheus(snap, refused), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/metrics/history",
    summary="The metrics of the last minutes: rates and gauges, one point per step",
    responses={200: schemas.json_response("One point per step, oldest first", "MetricsHistory")},
)
async def get_metrics_history(
    request: Request,
    window: Annotated[
        int,
        Query(
            ge=history.STEP_S,
            le=history.MAX_WINDOW_S,
            description=f"Seconds back from now (at most {history.MAX_WINDOW_S}: the span kept)",
        ),
    ] = history.DEFAULT_WINDOW_S,
) -> Response:
    """One point per step of ``stepSeconds`` (5), oldest first: ``rates`` per second over
    the step before it, ``gauges`` as sampled. A step no process sampled is a gap: a
    point whose ``rates`` and ``gauges`` are null (and the next point's ``rates`` too).
    Kept in Redis by every API and worker process, so it covers the whole deployment."""
    points = await history.read(services(request).broker, window)
    return json({"stepSeconds": history.STEP_S, "points": [_point(p) for p in points]})


def _point(p: history.Point) -> dict[str, Any]:
    return {"t": ms_to_iso(p.t_ms), "rates": p.rates, "gauges": p.gauges}


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return json({"status": "ok"})


@router.get("/readyz", summary="Redis and the store answer")
async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await svc.broker.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"{type(exc).__name__}"
    try:
        async with asyncio.timeout(2):
            await svc.store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"{type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return json({"status": "ready", "checks": checks})
    failing = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return problem(503, f"not ready ({failing})", headers={"Retry-After": "1"}, checks=checks)
