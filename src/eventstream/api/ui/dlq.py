"""The dashboard's dead letters: the DLQ newest first, filtered by type and by text in
the reason, and its actions (replay or delete one, the selected, or all that match).

Reading never walks the whole DLQ: without filters a page is one keyset read; with
filters a page examines at most ``dead.SEARCH_BUDGET`` entries and offers to continue
from where it stopped. Acting on "all that match" first shows how many match now
(a dry run, counted by the server) and acts only on the confirmed POST; a count that
takes longer than ``COUNT_BUDGET_S`` shows how far it got and counts on in the next
request (htmx asks for it at once; without a script, a link does). The actions are the
JSON API's own (eventstream.replay.dead: the same scripts, so the ``replayed`` and
``deleted`` counters stay exact), each recorded in the audit trail with the acting key.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eventstream.api.deps import services
from eventstream.api.guard import principal_of
from eventstream.api.replay import audit
from eventstream.api.ui.access import Visit, ui_root
from eventstream.api.ui.render import page
from eventstream.auth import trail
from eventstream.broker import Broker, DeadEntry
from eventstream.errors import Forbidden, NotFound, ValidationError
from eventstream.event import ms_to_iso
from eventstream.incoming import TYPE_PATTERN
from eventstream.replay import dead
from eventstream.replay.engine import MAX_LIMIT, Selection

PAGE_SIZE = 50
SEARCH_BUDGET = dead.SEARCH_BUDGET  # entries a filtered page examines at most
STEP = MAX_LIMIT  # events one confirmed "all that match" request acts on at most
COUNT_BUDGET_S = 0.1  # one confirmation request counts this long at most, then shows how far it got
MAX_TEXT = 200  # characters of a reason filter
FIRST_LINE = 300  # characters of a reason shown in its row (the rest under "details")
OUTCOMES = ("replayed", "deleted", "missing", "left")
_TYPE = re.compile(TYPE_PATTERN)
_COUNT = re.compile(r"^[0-9]{1,12}$")
Getter = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Filter:
    """What the visitor filters by: a type, and text the reason contains (ignoring case)."""

    type: str | None
    text: str | None

    @classmethod
    def of(cls, get: Getter) -> Filter:
        """From a query or a form (``get(name)`` -> str | None), checked."""
        type_ = (get("type") or "").strip() or None
        text = (get("q") or "").strip() or None
        if type_ is not None and not _TYPE.fullmatch(type_):
            raise ValidationError(
                "type: 1-128 letters, digits or _ . : -", [{"loc": "query.type", "msg": "invalid"}]
            )
        if text is not None and len(text) > MAX_TEXT:
            raise ValidationError(
                f"reason text: at most {MAX_TEXT} characters", [{"loc": "query.q", "msg": "too long"}]
            )
        return cls(type_, text)

    @property
    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("type", self.type), ("q", self.text)) if v}

    @property
    def selection(self) -> Selection:
        return Selection(type=self.type)

    def describe(self) -> str:
        """For the audit trail."""
        text = f" reason~{self.text!r}" if self.text else ""
        return self.selection.describe() + text


def row(d: DeadEntry) -> dict[str, Any]:
    first = d.reason.splitlines()[0] if d.reason else ""
    short = first if len(first) <= FIRST_LINE else first[:FIRST_LINE] + "…"
    return {
        "id": d.event_id,
        "type": d.type,
        "first": short,
        "more": short != d.reason or bool(d.traceback),
        "reason": d.reason,
        "traceback": d.traceback,
        "attempts": d.attempts,
        "failed_at": ms_to_iso(d.last_failure_ms),
    }


def outcome_of(numbers: dict[str, int]) -> str | None:
    """The outcome of an action in words, from its numbers only (never the request's text)."""
    parts = []
    if "replayed" in numbers:
        parts.append(f"Replayed {numbers['replayed']:,}")
    if "deleted" in numbers:
        parts.append(f"Deleted {numbers['deleted']:,}")
    if missing := numbers.get("missing", 0):
        parts.append(f"{missing:,} {'was' if missing == 1 else 'were'} no longer in the DLQ")
    if left := numbers.get("left", 0):
        parts.append(f"{left:,} not replayed yet (the replay rate's cap per request): replay them again")
    return "; ".join(parts) + "." if parts else None


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and _COUNT.fullmatch(value) else None


async def dead_letters(request: Request, visit: Visit) -> Response:
    """GET /ui/dlq: dead events newest first, a page at a time."""
    q = request.query_params
    f = Filter.of(q.get)
    cursor = q.get("cursor") or None
    broker = services(request).broker
    if f.type is None and f.text is None:
        items, nxt = await dead.page(broker, PAGE_SIZE, cursor, None)
        found = dead.Found(items, nxt, len(items), None)
    else:
        found = await dead.search(broker, PAGE_SIZE, cursor, f.type, f.text, SEARCH_BUDGET)
    numbers = {k: n for k in OUTCOMES if (n := _count(q.get(k))) is not None}
    return page(
        request,
        visit,
        "dlq.html",
        nav="dlq",
        filter=f,
        rows=[row(d) for d in found.items],
        found=found,
        reached=ms_to_iso(found.reached.last_failure_ms) if found.reached else None,
        filtered=f.type is not None or f.text is not None,
        full=len(found.items) == PAGE_SIZE,
        cursor=cursor,
        newer=urlencode(f.query),
        older=urlencode({**f.query, "cursor": found.next_cursor}) if found.next_cursor else None,
        outcome=outcome_of(numbers),
    )


def _back(request: Request, f: Filter, **numbers: int) -> Response:
    """To the list with the same filter, the outcome in numbers."""
    query = urlencode({**f.query, **{k: str(v) for k, v in numbers.items()}})
    return RedirectResponse(f"{ui_root(request)}/dlq?{query}", status_code=303)


def _form(request: Request) -> dict[str, list[str]]:
    form: dict[str, list[str]] = request.state.form
    return form


def _field(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def form_get(form: dict[str, list[str]]) -> Getter:
    return lambda name: _field(form, name)


def _event_id(value: str | None) -> str:
    if not value or len(value) > 64:
        raise ValidationError("an event id: 1-64 characters", [{"loc": "form.one", "msg": "invalid"}])
    return value


def _chosen(form: dict[str, list[str]]) -> Selection:
    ids = tuple(form.get("id") or ())
    for i in ids:
        _event_id(i)
    return Selection(ids=ids)  # at most replay.engine.MAX_IDS: a ValidationError beyond


def _record(request: Request, action: str, target: str, **counts: Any) -> None:
    key_id, key_name = principal_of(request).label
    trail.record(action, target=target, outcome="ok", key_id=key_id, key_name=key_name, via="ui", **counts)


async def _one(
    request: Request, act: Callable[[Broker, str], Awaitable[None]], action: str, counted: str
) -> Response:
    """Replay or delete one dead event (``act``); one that is gone is reported, not a failure."""
    form = _form(request)
    event_id = _event_id(_field(form, "one"))
    try:
        await act(services(request).broker, event_id)
        done = 1
    except NotFound:
        done = 0
    _record(request, action, f"id={event_id}", **{counted: done})
    return _back(request, Filter.of(form_get(form)), **{counted: done, "missing": 1 - done})


async def replay_one(request: Request, visit: Visit) -> Response:
    return await _one(request, dead.replay_one, "replay.dlq", "replayed")


async def delete_one(request: Request, visit: Visit) -> Response:
    return await _one(request, dead.delete_one, "dlq.delete", "deleted")


async def replay_selected(request: Request, visit: Visit) -> Response:
    form = _form(request)
    sel = _chosen(form)
    svc = services(request)
    done = await dead.replay_matching(svc.broker, sel, rate=svc.settings.replay_rate, limit=MAX_LIMIT)
    audit(request, "dlq", sel, done, via="ui", not_found=len(done.not_found))
    missing = len(done.not_found)
    left = max(0, len(sel.unique_ids()) - done.replayed - missing) if done.next_cursor else 0
    return _back(request, Filter.of(form_get(form)), replayed=done.replayed, missing=missing, left=left)


async def delete_selected(request: Request, visit: Visit) -> Response:
    form = _form(request)
    sel = _chosen(form)
    done = await dead.delete_matching(services(request).broker, sel)
    _record(request, "dlq.delete", sel.describe(), deleted=done.deleted, not_found=len(done.not_found))
    return _back(request, Filter.of(form_get(form)), deleted=done.deleted, missing=len(done.not_found))


ACTIONS = {"replay": "Replay", "delete": "Delete"}


async def confirm(request: Request, visit: Visit) -> Response:
    """GET /ui/dlq/confirm?do=replay|delete: how many dead events the filter matches
    now, and the form that acts on them."""
    if not visit.can_act:
        raise Forbidden("replaying or deleting dead events needs a key with scope admin")
    action = request.query_params.get("do", "")
    if action not in ACTIONS:
        raise ValidationError("do: replay or delete", [{"loc": "query.do", "msg": "invalid"}])
    f = Filter.of(request.query_params.get)
    tally = await dead.count_matching(
        services(request).broker, f.selection, f.text,
        cursor=request.query_params.get("counted") or None, budget_s=COUNT_BUDGET_S,
    )  # fmt: skip
    if tally.cursor is None:
        return _confirm_page(request, visit, f, action, matched=tally.matched, step=None)
    more = urlencode({"do": action, **f.query, "counted": tally.cursor})
    counting = {"matched": tally.matched, "examined": tally.examined, "more": more}
    return _confirm_page(request, visit, f, action, matched=None, step=None, counting=counting)


def _confirm_page(request: Request, visit: Visit, f: Filter, action: str, **context: Any) -> Response:
    """The confirmation (``matched``: the count now), a count's progress (``counting``)
    or a step's progress (``step``)."""
    context.setdefault("counting", None)
    return page(
        request,
        visit,
        "dlq_confirm.html",
        nav="dlq",
        filter=f,
        action=action,
        verb=ACTIONS[action],
        back=urlencode(f.query),
        **context,
    )


async def _matching(request: Request, visit: Visit, action: str) -> Response:
    """One confirmed call of "all that match": at most ``STEP`` events (and, for a
    replay, the rate's 10 s); a page to continue when more are left."""
    form = _form(request)
    f = Filter.of(form_get(form))
    cursor = _field(form, "cursor") or None
    so_far = _count(_field(form, "so_far")) or 0
    svc = services(request)
    if action == "replay":
        replayed = await dead.replay_matching(
            svc.broker, f.selection, rate=svc.settings.replay_rate, limit=STEP, cursor=cursor,
            reason=f.text,
        )  # fmt: skip
        audit(request, "dlq", f.selection, replayed, via="ui", reason_contains=f.text or "")
        done, nxt = replayed.replayed, replayed.next_cursor
    else:
        deleted = await dead.delete_matching(
            svc.broker, f.selection, limit=STEP, cursor=cursor, reason=f.text
        )
        _record(request, "dlq.delete", f.describe(), deleted=deleted.deleted)
        done, nxt = deleted.deleted, deleted.next_cursor
    total = so_far + done
    if nxt is None:
        return _back(request, f, **{"replayed" if action == "replay" else "deleted": total})
    step = {"done": done, "total": total, "cursor": nxt}
    return _confirm_page(request, visit, f, action, matched=None, step=step)


async def replay_matching(request: Request, visit: Visit) -> Response:
    return await _matching(request, visit, "replay")


async def delete_matching(request: Request, visit: Visit) -> Response:
    return await _matching(request, visit, "delete")


PAGES = {
    "/dlq": (dead_letters, ["GET"]),
    "/dlq/confirm": (confirm, ["GET"]),
    "/dlq/replay-one": (replay_one, ["POST"]),
    "/dlq/delete-one": (delete_one, ["POST"]),
    "/dlq/replay-selected": (replay_selected, ["POST"]),
    "/dlq/delete-selected": (delete_selected, ["POST"]),
    "/dlq/replay-matching": (replay_matching, ["POST"]),
    "/dlq/delete-matching": (delete_matching, ["POST"]),
}
