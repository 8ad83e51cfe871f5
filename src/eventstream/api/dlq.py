"""The dead-letter queue over HTTP: browse, replay, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from eventstream.api import schemas
from eventstream.api.deps import Services, json, services
from eventstream.api.problems import problem
from eventstream.api.replay import DRY_RUN, Params, audit, page_body, preview_body
from eventstream.broker import DeadEntry
from eventstream.errors import NotFound
from eventstream.event import decode_envelope, ms_to_iso
from eventstream.incoming import TYPE_PATTERN
from eventstream.replay import dead as dlq

router = APIRouter(tags=["dead-letter queue"])

CURSOR_PATTERN = r"^[0-9]{1,20}-[0-9]{1,20}(-[0-9]{1,3})?$"  # a DLQ position (broker.entries)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: schemas.problem_response(
        "Not in the DLQ: unknown, or an event that is elsewhere now (`eventStatus`: queued, processing, "
        "retrying or processed; `detail` says where)"
    )
}
PAGE: dict[int | str, dict[str, Any]] = {200: schemas.json_response("Dead events, newest first", "DeadPage")}
ONE: dict[int | str, dict[str, Any]] = {
    200: schemas.json_response("The dead event", "DeadEvent"),
    **NOT_FOUND,
}
REPLAYED_ONE: dict[int | str, dict[str, Any]] = {
    202: schemas.json_response("Back in the queue", "ReplayedOne"),
    **NOT_FOUND,
}


def _checked(event_id: str) -> str:
    """Event ids are UUIDs; anything longer cannot be one of ours."""
    if len(event_id) > 64:
        raise NotFound("dead event", event_id[:64] + "…")
    return event_id


async def _not_dead(svc: Services, event_id: str) -> Response:
    """404 for an id not in the DLQ; when the event exists, the answer says where it is
    (a replayed event is retrying for a while before it is dead again, or processed)."""
    located = await svc.broker.locate(event_id)
    if located is not None and located.status != "dead":
        status = state = located.status
        if located.status == "retrying":
            state += f": {located.attempts} failed tr{'y' if located.attempts == 1 else 'ies'} so far"
            if located.next_attempt_ms is not None:
                state += f", the next at {ms_to_iso(located.next_attempt_ms)}"
    elif located is None and await svc.store.get(event_id) is not None:
        status = state = "processed"
    else:
        return problem(404, str(NotFound("dead event", event_id)))
    detail = f"event {event_id!r} is not in the DLQ now: it is {state} (GET /events/{event_id} follows it)"
    return problem(404, detail, eventStatus=status)


def dead_item(d: DeadEntry) -> dict[str, Any]:
    """A DLQ entry as GET /failed-events answers it."""
    env = decode_envelope(d.envelope)
    return {
        "id": d.event_id,
        "type": d.type,
        "payload": env.payload,
        "status": "dead",
        "reason": d.reason,
        "traceback": d.traceback,
        "attempts": d.attempts,
        "source": env.source,
        "severity": env.severity,
        "timestamp": env.timestamp,
        "orderingKey": env.orderingKey,
        "causationId": env.causationId,
        "receivedAt": ms_to_iso(env.receivedAt),
        "firstFailedAt": ms_to_iso(d.first_failure_ms),
        "failedAt": ms_to_iso(d.last_failure_ms),
    }


@router.get("/failed-events", summary="Dead events, newest first", responses=PAGE)
async def list_failed(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    type: Annotated[str | None, Query(pattern=TYPE_PATTERN)] = None,
) -> Response:
    items, nxt = await dlq.page(services(request).broker, limit, cursor, type)
    return json({"items": [dead_item(d) for d in items], "nextCursor": nxt})


@router.get("/failed-events/{event_id}", summary="One dead event", responses=ONE)
async def get_failed(request: Request, event_id: str) -> Response:
    svc = services(request)
    event_id = _checked(event_id)
    dead = await svc.broker.dead_entry_of(event_id)
    if dead is None:
        return await _not_dead(svc, event_id)
    return json(dead_item(dead))


@router.post(
    "/failed-events/replay",
    status_code=202,
    responses=DRY_RUN,
    summary="Replay dead events: all, or those the filters choose (same ids, attempts afresh)",
    description="Oldest first, at most `rate` events/s and `limit` events (or 10 s at the rate) per "
    "call, also when chosen by `id`; repeat with `cursor` = `nextCursor` (and the same filters and "
    "ids) until it is null. `since`/`until` apply to `failedAt`.",
)
async def replay_all(request: Request, params: Params) -> Response:
    svc = services(request)
    if params.dry_run:
        return json(preview_body(await dlq.preview_matching(svc.broker, params.selection)))
    page = await dlq.replay_matching(
        svc.broker,
        params.selection,
        rate=params.rate_for(svc.settings.replay_rate),
        limit=params.limit,
        cursor=params.cursor,
    )
    audit(request, "dlq", params.selection, page)
    return json(page_body(page, with_events=False), 202)


@router.post(
    "/failed-events/{event_id}/replay",
    status_code=202,
    summary="Send one dead event back to the queue (same id, attempts afresh)",
    responses=REPLAYED_ONE,
)
async def replay_one(request: Request, event_id: str) -> Response:
    svc = services(request)
    event_id = _checked(event_id)
    try:
        await dlq.replay_one(svc.broker, event_id)
    except NotFound:
        return await _not_dead(svc, event_id)
    return json({"replayed": 1, "eventId": event_id}, 202)


@router.delete(
    "/failed-events/{event_id}",
    status_code=204,
    responses=NOT_FOUND,
    summary="Delete one dead event for good (counted in `deleted`)",
)
async def delete_failed(request: Request, event_id: str) -> Response:
    svc = services(request)
    event_id = _checked(event_id)
    try:
        await dlq.delete_one(svc.broker, event_id)
    except NotFound:
        return await _not_dead(svc, event_id)
    return Response(status_code=204)
