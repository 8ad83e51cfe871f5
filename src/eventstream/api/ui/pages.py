"""The dashboard's pages, each a ``Handler`` (eventstream.api.ui.routes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from eventstream.api.deps import services
from eventstream.api.ui.access import Visit
from eventstream.api.ui.render import page
from eventstream.ingest.accept import now_ms
from eventstream.ops import metrics


async def figures(request: Request) -> dict[str, int]:
    """The deployment's metrics now, as /metrics answers them in JSON."""
    svc = services(request)
    worker_ttl_ms = int(max(svc.settings.visibility_timeout, 10) * 1000)
    return metrics.summary(await metrics.snapshot(svc.broker, now_ms(), worker_ttl_ms))


async def overview(request: Request, visit: Visit) -> Response:
    return page(request, visit, "overview.html", nav="overview", figures=await figures(request))
