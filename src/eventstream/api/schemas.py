"""Shapes of request and response bodies, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

import msgspec

from eventstream.incoming import IncomingEvent


class BatchBody(msgspec.Struct):
    events: list[IncomingEvent]


class AcceptedBody(msgspec.Struct):
    message: str
    eventId: str
    duplicate: bool


class BatchItem(msgspec.Struct, omit_defaults=True):
    index: int
    status: int
    eventId: str | None = None
    duplicate: bool | None = None
    error: str | None = None
    errors: list[dict[str, str]] | None = None  # what is wrong, by location (as in a 422 problem)


class BatchResult(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItem]


class Problem(msgspec.Struct):
    type: str
    title: str
    status: int
    detail: str


class DeadEvent(msgspec.Struct):
    """An event in the DLQ (times are ISO 8601, UTC)."""

    id: str
    type: str
    payload: dict[str, Any]
    status: str
    reason: str
    traceback: str | None
    attempts: int
    source: str | None
    severity: str | None
    timestamp: str | None
    orderingKey: str | None
    causationId: str | None
    receivedAt: str | None
    firstFailedAt: str | None
    failedAt: str | None


class DeadPage(msgspec.Struct):
    items: list[DeadEvent]
    nextCursor: str | None


class ReplayPreview(msgspec.Struct):
    """``dry_run=true``: how many events would be replayed, a sample of their ids, and the
    requested ids that were not found."""

    dryRun: bool
    matched: int
    sample: list[str]
    notFound: list[str]


class ReplayedEvent(msgspec.Struct):
    id: str
    replayOf: str


class ReplayPage(msgspec.Struct, omit_defaults=True):
    """One call's replays; repeat with ``cursor`` = ``nextCursor`` until it is null.
    ``duplicates``: events already replayed under this Idempotency-Key (history only);
    ``events``: the new ids, when chosen by ``id`` (history only)."""

    replayed: int
    nextCursor: str | None
    notFound: list[str] | None = None
    duplicates: int | None = None
    events: list[ReplayedEvent] | None = None


class ReplayedOne(msgspec.Struct):
    replayed: int
    eventId: str


class HistoryRates(msgspec.Struct):
    """Per second over the step before the point (the counters of the JSON summary)."""

    received: float
    processed: float
    failed: float
    retried: float
    deadLettered: float


class HistoryGauges(msgspec.Struct):
    """As sampled at the point (the gauges of the JSON summary, and the time in ms the
    queued event delivered to no worker yet has waited the longest)."""

    queued: int
    pending: int
    scheduled: int
    dlq: int
    workers: int
    oldestWaitingMs: int


class HistoryPoint(msgspec.Struct):
    """One step, named by its start (ISO 8601, UTC). ``gauges`` null: no process sampled
    this step (a gap); ``rates`` null: a gap here or in the step before."""

    t: str
    rates: HistoryRates | None
    gauges: HistoryGauges | None


class MetricsHistory(msgspec.Struct):
    """One point per step of ``stepSeconds``, oldest first, from the first step sampled in
    the window to the last."""

    stepSeconds: int
    points: list[HistoryPoint]


_TYPES = [IncomingEvent, BatchBody, AcceptedBody, BatchResult, Problem, DeadPage, ReplayPreview, ReplayPage,
          ReplayedOne, MetricsHistory]  # fmt: skip
_, COMPONENTS = msgspec.json.schema_components(_TYPES, ref_template="#/components/schemas/{name}")


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(name: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(name)}}}}


def json_response(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


def problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
