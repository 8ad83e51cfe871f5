"""The dashboard's pages, each a ``Handler`` (eventstream.api.ui.routes)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from eventstream.api.deps import services
from eventstream.api.ui.access import Visit
from eventstream.api.ui.chart import draw
from eventstream.api.ui.render import page
from eventstream.ingest.accept import now_ms
from eventstream.ops import history, metrics


async def figures(request: Request) -> dict[str, int]:
    """The deployment's metrics now, as /metrics answers them in JSON."""
    svc = services(request)
    worker_ttl_ms = int(max(svc.settings.visibility_timeout, 10) * 1000)
    return metrics.summary(await metrics.snapshot(svc.broker, now_ms(), worker_ttl_ms))


async def overview(request: Request, visit: Visit) -> Response:
    return page(request, visit, "overview.html", nav="overview", figures=await figures(request))


async def chart(request: Request, visit: Visit) -> Response:
    """The overview's chart alone (htmx polls it): the history's rates, drawn again."""
    return page(request, visit, "chart.html", **await chart_context(request))


async def chart_context(request: Request) -> dict[str, Any]:
    """What chart.html needs: the last DEFAULT_WINDOW_S of the history, drawn."""
    window_s = history.DEFAULT_WINDOW_S
    now = now_ms()
    read = await history.read(services(request).broker, window_s, now_ms=now)
    drawn = draw([(p.t_ms, p.rates) for p in read if p.rates is not None], now, window_s, history.STEP_S)
    return {
        "chart": drawn,
        "window_min": window_s // 60,
        "step_s": history.STEP_S,
        "refresh_s": history.STEP_S,
    }
