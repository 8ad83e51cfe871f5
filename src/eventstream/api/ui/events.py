"""The dashboard's Events pages: the list (by status, type and time, keyset-paged), find
by id, and one event's page.

Each status is listed from where it lives, newest or next first, never counted:
processed events from the store (by processing time), dead ones from the DLQ (by
failure), retrying ones from the retry sets (by next attempt), queued and in-flight ones
from the streams (by enqueueing). Events parked behind their ordering key are not
listed (their records have no order to page by); find them by id. A filter by type on
the live statuses looks at most ``BUDGET`` events per page and then offers to go on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eventstream.api.deps import Services, services
from eventstream.api.dlq import dead_item
from eventstream.api.events import MAX_ID, find_event, row_item
from eventstream.api.ui.access import Visit, ui_root
from eventstream.api.ui.render import page
from eventstream.broker import DeadEntry, browse, position_key
from eventstream.broker.views import RetryCursor, Retrying, cursor_text, parse_cursor
from eventstream.errors import NotFound, ValidationError
from eventstream.event import decode_envelope, ms_to_iso
from eventstream.incoming import TYPE_PATTERN
from eventstream.replay import dead as dlq

PAGE = 50  # events per page
BUDGET = 1000  # live events looked at per page when filtering by type
STATUSES = {
    "processed": ("Processed", "Processed", "by processing time, newest first"),
    "dead": ("Dead (DLQ)", "Failed", "by failure time, newest first"),
    "retrying": ("Retrying", "Next attempt", "by the time of their next attempt, soonest first"),
    "queued": ("Queued or processing", "Enqueued", "by the time they were enqueued, oldest first"),
}
_TYPE = re.compile(TYPE_PATTERN)
T = TypeVar("T")
C = TypeVar("C")


class PageError(ValidationError):
    """A filter the list cannot use: shown on the list's page, with the filters to fix."""


@dataclass
class Filters:
    status: str = "processed"
    type: str = ""
    since: str = ""  # as shown in the form: UTC, YYYY-MM-DDTHH:MM:SS
    until: str = ""
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: str | None = None

    def query(self, **changed: str | None) -> str:
        """The list's query string with these filters (and ``changed``)."""
        values: dict[str, str | None] = {
            "status": self.status,
            "type": self.type,
            "since": self.since,
            "until": self.until,
        }
        values.update(changed)
        return urlencode({k: v for k, v in values.items() if v}, quote_via=quote)


def filters_of(request: Request) -> Filters:
    """The list's filters from the query string; PageError names what is wrong."""
    q = request.query_params
    f = Filters()
    status = q.get("status", "").strip() or "processed"
    if status not in STATUSES:
        raise PageError(f"status must be one of {', '.join(STATUSES)}")
    f.status = status
    f.type = q.get("type", "").strip()
    if f.type and not _TYPE.match(f.type):
        f.type = ""
        raise PageError("type is not an event type: letters, digits and _ . : - (at most 128)")
    f.since, f.since_ms = _time(q.get("since", ""), "since")
    f.until, f.until_ms = _time(q.get("until", ""), "until")
    f.cursor = q.get("cursor") or None
    if f.cursor is not None and len(f.cursor) > 512:
        raise PageError("cursor is not one this page made: go back to the newest")
    return f


def _time(raw: str, name: str) -> tuple[str, int | None]:
    """A form's time (UTC unless it names its zone) as the form shows it, and in ms."""
    raw = raw.strip()
    if not raw:
        return "", None
    try:
        when = datetime.fromisoformat(raw)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ms = max(int(when.timestamp() * 1000), 0)  # nothing happened before 1970
        shown = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (ValueError, OverflowError):
        raise PageError(
            f"{name} is not a time: {raw[:40]!r}. Write it like 2026-12-06T15:30 (UTC) or "
            "2026-12-06T15:30:00+01:00",
            [{"loc": f"query.{name}", "msg": "not a time"}],
        ) from None
    return shown, ms


@dataclass
class Listing:
    rows: list[dict[str, Any]]
    next_cursor: str | None
    note: str = ""  # e.g. a type filter that looked at its budget without filling the page


async def events_page(request: Request, visit: Visit) -> Response:
    """GET /ui/events: events of one status, filtered, a page at a time."""
    try:
        f = filters_of(request)
        listing = await _listing(services(request), f)
    except ValidationError as exc:  # PageError, or a cursor the store refuses
        return _page(request, visit, Filters(), Listing([], None), status=exc.status, message=exc.detail)
    return _page(request, visit, f, listing)


def _page(
    request: Request, visit: Visit, f: Filters, listing: Listing, status: int = 200, message: str = ""
) -> Response:
    root = ui_root(request)
    _, when, order = STATUSES[f.status]
    return page(
        request,
        visit,
        "events.html",
        status=status,
        nav="events",
        f=f,
        statuses=[(k, v[0]) for k, v in STATUSES.items()],
        when=when,
        order=order,
        rows=listing.rows,
        note=listing.note,
        message=message,
        newest=f"{root}/events?{f.query()}" if f.cursor else None,
        next=f"{root}/events?{f.query(cursor=listing.next_cursor)}" if listing.next_cursor else None,
    )


async def _listing(svc: Services, f: Filters) -> Listing:
    if f.status == "processed":
        rows, nxt = await svc.store.list(PAGE, f.cursor, f.type or None, f.since_ms, f.until_ms)
        return Listing([_processed(r) for r in map(row_item, rows)], nxt)
    if f.status == "dead":
        return await _dead(svc, f)
    if f.status == "retrying":
        return await _retrying(svc, f)
    return await _queued(svc, f)


def _processed(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "when": item["processedAt"]}


async def _dead(svc: Services, f: Filters) -> Listing:
    cursor = f.cursor
    if cursor is None and f.until_ms is not None:
        cursor = f"{f.until_ms}-0"  # DLQ places are times: those before ``until``
    if cursor is not None and position_key(cursor) is None:
        raise PageError("cursor is not one this page made: go back to the newest")

    async def fetch(position: str | None, n: int) -> list[DeadEntry]:
        return (await dlq.page(svc.broker, n, position, None))[0]

    def too_old(d: DeadEntry) -> bool:
        return f.since_ms is not None and _entry_ms(d.dlq_entry) < f.since_ms

    found, nxt, note = await _picked(fetch, lambda d: d.position, f.type, lambda d: d.type, cursor, too_old)
    return Listing([{**item, "when": item["failedAt"]} for item in map(dead_item, found)], nxt, note)


def _entry_ms(entry: str) -> int:
    return int(entry.partition("-")[0])


async def _retrying(svc: Services, f: Filters) -> Listing:
    after: RetryCursor | None = None
    if f.cursor is not None:
        after = parse_cursor(f.cursor)
        if after is None:
            raise PageError("cursor is not one this page made: go back to the newest")

    async def fetch(cursor: RetryCursor | None, n: int) -> list[Retrying]:
        found = await svc.broker.views.retries(cursor, n, since_ms=f.since_ms, until_ms=f.until_ms)
        return [r for r in found if r.envelope is not None]  # promoted (or replayed) while read

    found, nxt, note = await _picked(
        fetch, lambda r: r.cursor, f.type, lambda r: _type_of(r.envelope or ""), after
    )

    def row(r: Retrying) -> dict[str, Any]:
        return _live(r.envelope or "", "retrying", r.attempts, ms_to_iso(r.due_ms))

    return Listing([row(r) for r in found], None if nxt is None else cursor_text(nxt), note)


async def _queued(svc: Services, f: Filters) -> Listing:
    after: tuple[int, int, int] | None = None
    if f.cursor is not None:
        after = position_key(f.cursor)
        if after is None or after[2] >= len(svc.broker.partitions):
            raise PageError("cursor is not one this page made: go back to the newest")

    async def fetch(cursor: tuple[int, int, int] | None, n: int) -> list[browse.InStream]:
        return await browse.in_stream(svc.broker.partitions, cursor, f.since_ms, f.until_ms, n)

    found, nxt, note = await _picked(
        fetch, lambda s: s.place, f.type, lambda s: _type_of(s.entry.envelope), after
    )

    def row(s: browse.InStream) -> dict[str, Any]:
        e = s.entry
        status, attempts = ("processing", e.attempts + 1) if s.in_flight else ("queued", e.attempts)
        return _live(e.envelope, status, attempts, ms_to_iso(_entry_ms(e.entry)))

    return Listing([row(s) for s in found], None if nxt is None else "-".join(map(str, nxt)), note)


async def _picked(
    fetch: Callable[[C | None, int], Awaitable[list[T]]],
    cursor_of: Callable[[T], C],
    type_: str,
    type_of: Callable[[T], str],
    cursor: C | None,
    past: Callable[[T], bool] | None = None,
) -> tuple[list[T], C | None, str]:
    """A page of events of ``type_`` (any when empty) from ``fetch``, looking at most
    BUDGET of them and stopping at the first that is ``past`` the time filter; the cursor
    after the last one looked at (None when none is left), and a note when the budget ran
    out before the page filled."""
    out: list[T] = []
    looked = 0
    while True:
        chunk = await fetch(cursor, PAGE)
        for i, item in enumerate(chunk):
            if past is not None and past(item):
                return out, None, ""
            looked += 1
            cursor = cursor_of(item)
            if not type_ or type_of(item) == type_:
                out.append(item)
                if len(out) == PAGE:
                    more = i < len(chunk) - 1 or len(chunk) == PAGE
                    return out, cursor if more else None, ""
        if len(chunk) < PAGE:
            return out, None, ""
        if looked >= BUDGET:
            note = f"Looked at {looked} events and found {len(out)} of type {type_}: Next page looks further."
            return out, cursor, note


def _type_of(envelope: str) -> str:
    try:
        return decode_envelope(envelope).type
    except ValueError:
        return ""


def _live(envelope: str, status: str, attempts: int, when: str) -> dict[str, Any]:
    env = decode_envelope(envelope)
    return {
        "id": env.id,
        "type": env.type,
        "status": status,
        "attempts": attempts,
        "receivedAt": ms_to_iso(env.receivedAt),
        "when": when,
        "orderingKey": env.orderingKey,
    }


async def find(request: Request, visit: Visit) -> Response:
    """GET /ui/events/find?id=: the event's page when it exists in any state (303), else
    the list with a message (404)."""
    wanted = request.query_params.get("id", "").strip()
    if not wanted:
        message, status = "Paste an event id into the search box to find that event.", 400
    elif len(wanted) > MAX_ID:
        message, status = f"No event with id {wanted[:MAX_ID]!r}…: event ids are at most 64 characters.", 404
    elif wanted.isprintable() and await find_event(services(request), wanted) is not None:
        return RedirectResponse(f"{ui_root(request)}/events/{quote(wanted, safe='')}", status_code=303)
    else:
        message, status = f"No event with id {wanted!r}: it was never accepted, or it is gone.", 404
    return _page(request, visit, Filters(), await _listing(services(request), Filters()), status, message)


async def event_page(request: Request, visit: Visit) -> Response:
    """GET /ui/events/{id}: one event in any state, with its failures when it failed."""
    event_id = request.path_params["event_id"]
    found = await find_event(services(request), event_id)
    if found is None:
        raise NotFound("event", event_id if len(event_id) <= MAX_ID else event_id[:MAX_ID] + "…")
    item, located = found.item, found.located
    trace_id = None
    failure: dict[str, Any] | None = None
    if located is not None:
        env = decode_envelope(located.envelope)
        trace_id = _trace_id(env.traceparent)
        if located.dead is not None:
            failure = dead_item(located.dead)
        elif located.first_failure_ms is not None:
            failure = {"firstFailedAt": ms_to_iso(located.first_failure_ms), "lastError": located.last_error}
    return page(
        request,
        visit,
        "event.html",
        nav="events",
        e=item,
        trace_id=trace_id,
        failure=failure,
        kept_in_redis=located is not None,
    )


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (``00-<trace id>-<span id>-<flags>``)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
