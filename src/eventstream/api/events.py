"""POST /events, POST /events/batch, GET /events, GET /events/{id}."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from eventstream.api import schemas
from eventstream.api.deps import Services, json, read_body, request_header, services
from eventstream.api.guard import principal_of
from eventstream.api.problems import problem
from eventstream.broker import Located
from eventstream.errors import NotFound, Unconfirmed, ValidationError
from eventstream.event import decode_envelope, ms_to_iso
from eventstream.incoming import TYPE_PATTERN, parse_event
from eventstream.ingest.accept import (
    Item,
    batch_item_keys,
    check_idempotency_key,
    conflict_message,
    now_ms,
    parse_batch,
    to_envelope,
)
from eventstream.store import ProcessedRow

router = APIRouter(tags=["events"])

ACCEPTED = "Event accepted and queued"
DUPLICATE = "Duplicate: this event was already accepted; nothing was queued"
MAX_ID = 64  # event ids are UUIDs: a longer one is none of ours


def idempotency_header(description: str) -> dict[str, Any]:
    """The OpenAPI description of the optional Idempotency-Key header."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
        "description": description,
    }


@router.post(
    "/events",
    status_code=202,
    summary="Ingest one event",
    openapi_extra={
        **schemas.body("IncomingEvent"),
        "parameters": [
            idempotency_header(
                "Makes the post idempotent within the dedupe window and the caller's namespace; "
                "reused for a different event: 422."
            )
        ],
    },
    responses={
        202: schemas.json_response("Accepted and queued", "AcceptedBody"),
        200: schemas.json_response("Duplicate of an event accepted earlier", "AcceptedBody"),
        413: schemas.problem_response("Body too large"),
        422: schemas.problem_response("Invalid event, or its idempotency key was used for a different event"),
        503: schemas.problem_response("Redis unreachable or slow, or ingest shedding load; retry later"),
    },
)
async def post_event(request: Request) -> Response:
    svc = services(request)
    s = svc.settings
    raw = await read_body(request, s.max_body_bytes)
    key = check_idempotency_key(request_header(request, b"idempotency-key"))
    event = parse_event(raw, s.max_depth, s.max_object_keys, s.max_string_length)
    await svc.backpressure.check()
    publication = svc.publication(request, event.type)
    ns = principal_of(request).namespace
    item = to_envelope(event, key, now_ms(), trace=publication.context, namespace=ns)
    try:
        [result] = await publication.submit([item])
    except Unconfirmed as exc:
        [result] = exc.results
        if result.conflict:  # nothing was queued: the conflict is the answer
            raise ValidationError(conflict_message("header Idempotency-Key" if key else "id")) from None
        return problem(503, exc.detail, {"Retry-After": str(exc.retry_after_s)},
                       eventId=result.event_id, duplicate=result.duplicate)  # fmt: skip
    if result.conflict:
        raise ValidationError(conflict_message("header Idempotency-Key" if key else "id"))
    if result.duplicate:
        return json({"message": DUPLICATE, "eventId": result.event_id, "duplicate": True}, 200)
    return json({"message": ACCEPTED, "eventId": result.event_id, "duplicate": False}, 202)


@router.post(
    "/events/batch",
    summary="Ingest up to max_batch events; each item succeeds or fails on its own",
    openapi_extra={
        **schemas.body("BatchBody"),
        "parameters": [
            idempotency_header(
                "Makes each item idempotent under the key `<Idempotency-Key>:<index>` "
                "(an item's own `id` wins): the same batch sent again gives duplicates."
            )
        ],
    },
    responses={
        200: schemas.json_response("One result per item, in order", "BatchResult"),
        413: schemas.problem_response("Body or batch too large"),
        422: schemas.problem_response("Body is not a batch, or the Idempotency-Key is too long"),
        503: schemas.problem_response("Redis unreachable or slow, or ingest shedding load; retry later"),
    },
)
async def post_batch(request: Request) -> Response:
    svc = services(request)
    s = svc.settings
    raw = await read_body(request, s.max_body_bytes)
    items = parse_batch(raw, s.max_batch)
    keys = batch_item_keys(request_header(request, b"idempotency-key"), len(items))
    await svc.backpressure.check(len(items))
    publication = svc.publication(request, "batch", len(items))
    context = publication.context
    results: list[dict[str, Any]] = [{} for _ in items]
    good: list[tuple[int, Item]] = []
    now = now_ms()
    limits = (s.max_depth, s.max_object_keys, s.max_string_length)
    ns = principal_of(request).namespace
    by_header: set[int] = set()
    for i, item in enumerate(items):
        try:
            event = parse_event(bytes(item), *limits)
            key = None if keys is None or event.id is not None else keys[i]
            if key is not None:
                by_header.add(i)
            good.append((i, to_envelope(event, key, now, trace=context, namespace=ns)))
        except ValidationError as exc:
            results[i] = {"index": i, "status": exc.status, "error": exc.detail}
            if exc.errors:
                results[i]["errors"] = exc.errors
    unconfirmed: Unconfirmed | None = None
    try:
        accepted = await publication.submit([g for _, g in good])
    except Unconfirmed as exc:
        unconfirmed, accepted = exc, exc.results
    conflicts = 0
    for (i, _), acc in zip(good, accepted, strict=True):
        if acc.conflict:
            conflicts += 1
            source = "header Idempotency-Key" if i in by_header else "id"
            results[i] = {"index": i, "status": 422, "error": conflict_message(source)}
            continue
        results[i] = {
            "index": i,
            "status": 200 if acc.duplicate else 202,
            "eventId": acc.event_id,
            "duplicate": acc.duplicate,
        }
    dups = sum(1 for a in accepted if a.duplicate)
    counts = {
        "accepted": len(accepted) - dups - conflicts,
        "duplicates": dups,
        "rejected": len(items) - len(accepted) + conflicts,
        "results": results,
    }
    if unconfirmed is not None:  # the items' outcomes stand, but they are not yet safe
        return problem(503, unconfirmed.detail, {"Retry-After": str(unconfirmed.retry_after_s)}, **counts)
    return json(counts)


def row_item(row: ProcessedRow) -> dict[str, Any]:
    """The item of a processed event (its store row), as GET /events answers it."""
    return {
        "id": row.id,
        "type": row.type,
        "payload": msgspec.json.decode(row.payload),
        "status": "processed",
        "attempts": row.attempts,
        "source": row.source,
        "severity": row.severity,
        "timestamp": row.timestamp,
        "idempotencyKey": row.idempotency_key,
        "replayOf": row.replay_of,
        "orderingKey": row.ordering_key,
        "causationId": row.causation_id,
        "children": msgspec.json.decode(row.children) if row.children else [],
        "receivedAt": ms_to_iso(row.received_at_ms),
        "processedAt": ms_to_iso(row.processed_at_ms),
    }


def to_ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationError(f"{name} needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return int(value.timestamp() * 1000)


@router.get("/events", summary="Processed events, newest first")
async def list_events(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    type: Annotated[str | None, Query(pattern=TYPE_PATTERN)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
) -> Response:
    svc = services(request)
    rows, nxt = await svc.store.list(limit, cursor, type, to_ms(since, "since"), to_ms(until, "until"))
    return json({"items": [row_item(r) for r in rows], "nextCursor": nxt})


@router.get(
    "/events/{event_id}",
    summary="One event in any state",
    responses={404: schemas.problem_response("Unknown event")},
)
async def get_event(request: Request, event_id: str) -> Response:
    found = await find_event(services(request), event_id)
    if found is None:
        raise NotFound("event", event_id if len(event_id) <= MAX_ID else event_id[:MAX_ID] + "…")
    return json(found.item)


@dataclass(frozen=True, slots=True)
class Found:
    """An event in any state: its item as GET /events/{id} answers it, and where Redis
    holds it (None for a processed event, whose record is the store's row)."""

    item: dict[str, Any]
    located: Located | None


async def find_event(svc: Services, event_id: str) -> Found | None:
    """The event ``event_id`` in any state, or None when it is unknown (an id longer
    than any of ours included)."""
    if len(event_id) > MAX_ID:
        return None
    located = await svc.broker.locate(event_id)
    if located is not None:
        return Found(located_item(located), located)
    row = await svc.store.get(event_id)
    return None if row is None else Found(row_item(row), None)


def located_item(located: Located) -> dict[str, Any]:
    """The item of an event Redis holds (queued, processing, retrying or dead)."""
    env = decode_envelope(located.envelope)
    item: dict[str, Any] = {
        "id": env.id,
        "type": env.type,
        "payload": env.payload,
        "status": located.status,
        "attempts": located.attempts,
        "source": env.source,
        "severity": env.severity,
        "timestamp": env.timestamp,
        "idempotencyKey": env.idempotencyKey,
        "replayOf": env.replayOf,
        "orderingKey": env.orderingKey,
        "causationId": env.causationId,
        "children": [],  # a follow-up exists only once its parent is processed
        "receivedAt": ms_to_iso(env.receivedAt),
    }
    if located.parked_ms is not None:  # waiting behind earlier events of its ordering key
        item["parkedAt"] = ms_to_iso(located.parked_ms)
    if located.next_attempt_ms is not None:
        item["nextAttemptAt"] = ms_to_iso(located.next_attempt_ms)
    if located.dead is not None:
        item["reason"] = located.dead.reason
        item["failedAt"] = ms_to_iso(located.dead.last_failure_ms)
    return item
