"""GET /admin/audit: the audit report (see eventstream.ops.audit) as JSON."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from eventstream.api.deps import json, services
from eventstream.ingest.accept import now_ms
from eventstream.ops.audit import audit

router = APIRouter(tags=["operations"])


@router.get(
    "/admin/audit",
    summary="Check the conservation law and list stranded or inconsistent events",
    description="Always 200 when Redis and the store answer: `ok` says whether anything is wrong, "
    "`problems` what, with example ids. The same report as `eventstream audit`.",
)
async def get_audit(
    request: Request,
    examples: int = Query(5, ge=0, le=1000, description="Example ids per problem."),
) -> Response:
    svc = services(request)
    report = await audit(
        svc.broker,
        svc.store,
        now_ms(),
        visibility_timeout_ms=int(svc.settings.visibility_timeout * 1000),
        examples=examples,
    )
    return json(report.to_json())
