"""POST /replay: send processed events again, as new events, chosen by filters, at a capped rate.

The filters, the paging, the dry run and the audit record are the same for POST
/failed-events/replay (api/dlq.py); see eventstream.replay.engine for what a replay does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from eventstream.api import schemas
from eventstream.api.deps import json, services
from eventstream.api.guard import principal_of
from eventstream.auth import trail
from eventstream.errors import ValidationError
from eventstream.incoming import TYPE_PATTERN
from eventstream.ingest.accept import check_idempotency_key
from eventstream.replay import engine as replay
from eventstream.replay import history

router = APIRouter(tags=["replay"])


def _ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationError(
            f"{name} needs a time zone, e.g. 2026-01-01T00:00:00Z",
            [{"loc": f"query.{name}", "msg": "no zone"}],
        )
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ReplayParams:
    selection: replay.Selection
    rate: float | None
    limit: int
    cursor: str | None
    dry_run: bool

    def rate_for(self, default: float) -> float:
        """The request may lower the configured cap, never raise it."""
        return default if self.rate is None else min(self.rate, default)


def replay_params(
    type: Annotated[str | None, Query(pattern=TYPE_PATTERN, description="Only events of this type.")] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a zone, inclusive.")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 with a zone, exclusive.")] = None,
    id: Annotated[
        list[str] | None,
        Query(
            max_length=replay.MAX_IDS, description="These events (repeat the parameter); filters still apply."
        ),
    ] = None,
    rate: Annotated[
        float | None,
        Query(
            ge=replay.MIN_RATE,
            le=100_000,
            description="Events/s, at least 0.1; at most EVENTSTREAM_REPLAY_RATE.",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=replay.MAX_LIMIT, description="Most events this call replays (also by ids).")
    ] = 1000,
    cursor: Annotated[
        str | None, Query(max_length=512, description="nextCursor of the previous call.")
    ] = None,
    dry_run: Annotated[bool, Query(description="Only count what would be replayed.")] = False,
) -> ReplayParams:
    ids = tuple(id or ())
    if any(not i or len(i) > 64 for i in ids):
        raise ValidationError("each id must be 1-64 characters", [{"loc": "query.id", "msg": "length"}])
    selection = replay.Selection(type, _ms(since, "since"), _ms(until, "until"), ids)
    return ReplayParams(selection, rate, limit, cursor, dry_run)


Params = Annotated[ReplayParams, Depends(replay_params)]


def preview_body(p: replay.Preview) -> dict[str, Any]:
    return {"dryRun": True, "matched": p.matched, "sample": p.sample, "notFound": p.not_found}


def page_body(p: replay.Page, with_events: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"replayed": p.replayed, "nextCursor": p.next_cursor}
    if p.not_found:
        body["notFound"] = p.not_found
    if with_events:
        body["duplicates"] = p.duplicates
        body["events"] = [{"id": new, "replayOf": old} for new, old in p.events]
    return body


def audit(
    request: Request, source: str, sel: replay.Selection, page: replay.Page, via: str = "http", **more: Any
) -> None:
    """One audit record per replay call, with the acting key: what was chosen and what
    went; ``via`` names the door (``http``: the API, ``ui``: the dashboard), ``more``
    adds fields."""
    key_id, key_name = principal_of(request).label
    extra = {"duplicates": page.duplicates} if source == "history" else {}
    trail.record(
        f"replay.{source}",
        target=sel.describe(),
        outcome="ok",
        key_id=key_id,
        key_name=key_name,
        replayed=page.replayed,
        via=via,
        **extra,
        **more,
    )


DRY_RUN: dict[int | str, dict[str, Any]] = {
    200: schemas.json_response(
        "dry_run=true: how many events would be replayed, and a sample of their ids", "ReplayPreview"
    ),
    202: schemas.json_response("Replayed; repeat with cursor = nextCursor until it is null", "ReplayPage"),
}


@router.post(
    "/replay",
    status_code=202,
    responses=DRY_RUN,
    summary="Replay processed events as new events (new ids, replayOf the original)",
    description="Oldest first, at most `rate` events/s and `limit` events (or 10 s at the rate) per "
    "call, also when chosen by `id`; repeat with `cursor` = `nextCursor` (and the same filters and "
    "ids) until it is null. With an `Idempotency-Key` header, "
    "repeating a call replays nothing twice within the dedupe window.",
)
async def replay_history(request: Request, params: Params) -> Response:
    svc = services(request)
    s = svc.settings
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    if params.dry_run:
        return json(preview_body(await history.preview_history(svc.broker, svc.store, params.selection)))
    page = await history.replay_history(
        svc.broker,
        svc.store,
        params.selection,
        rate=params.rate_for(s.replay_rate),
        limit=params.limit,
        cursor=params.cursor,
        dedupe_window_ms=int(s.dedupe_window * 1000),
        request_key=key,
    )
    audit(request, "history", params.selection, page)
    body = page_body(page, with_events=bool(params.selection.ids))
    if not params.selection.ids:
        body["duplicates"] = page.duplicates
    return json(body, 202)
