"""OpenTelemetry: the POST's trace context is stored with the event and continued by
every handler try, in-process against the session's Redis, spans caught in memory."""

from __future__ import annotations

import sys
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from eventstream import Event, EventStream, PermanentError
from eventstream.event import Envelope, decode_envelope
from eventstream.settings import Settings
from tests.support.asgi import Api, spy_on_fast_path

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
HEADERS = {"traceparent": TRACEPARENT, "tracestate": "shop=checkout"}


async def stored(api: Api, event_id: str) -> Envelope:
    """The envelope of a queued event, as Redis holds it."""
    located = await api.broker.locate(event_id)
    assert located is not None
    return decode_envelope(located.envelope)


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """Finished spans with this name, in the order they started."""
    return sorted((s for s in spans.get_finished_spans() if s.name == name), key=lambda s: s.start_time or 0)


def ancestors(span: ReadableSpan, spans: InMemorySpanExporter) -> list[ReadableSpan]:
    """The local spans above ``span``, nearest first."""
    local = {span_id(s): s for s in spans.get_finished_spans()}
    out = []
    parent = span.parent
    while parent is not None and parent.span_id in local:
        out.append(local[parent.span_id])
        parent = local[parent.span_id].parent
    return out


def posted_by(publish: ReadableSpan, spans: InMemorySpanExporter) -> int:
    """The client's span the publish span descends from, through the spans FastAPI opens
    for the request (its native telemetry, once a tracer provider is set: the HTTP
    server span and the endpoint's)."""
    above = ancestors(publish, spans)
    for span in above:
        assert span.kind in (SpanKind.SERVER, SpanKind.INTERNAL), span.name
    parent = above[-1].parent if above else publish.parent
    assert parent is not None
    assert parent.is_remote
    return parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


async def test_with_a_provider_set_ingest_takes_the_stack_and_gets_the_server_span(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    """The ingest fast path steps aside while OpenTelemetry is set up, so that FastAPI
    records ingest requests as it records the others."""
    taken = spy_on_fast_path(traced_api.app)
    event_id = await traced_api.accepted("PAY", {"amount": 5}, headers=HEADERS)
    assert taken == []
    [publish] = named(spans, "eventstream.publish PAY")
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == event_id
    assert SpanKind.SERVER in [s.kind for s in ancestors(publish, spans)]
    assert posted_by(publish, spans) == int(CLIENT_SPAN, 16)


async def test_each_try_continues_the_posts_trace_and_a_retry_links_to_it(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[Event, int]] = []
    app = EventStream("traced")

    @app.handler("PAY", max_attempts=3)
    async def pay(event: Event) -> None:
        seen.append((event, trace.get_current_span().get_span_context().span_id))
        if event.attempt == 1:
            raise ConnectionError("card network down")

    event_id = await traced_api.accepted("PAY", {"amount": 5}, headers=HEADERS)
    env = await stored(traced_api, event_id)
    await traced_api.burst(app)

    [publish] = named(spans, "eventstream.publish PAY")
    assert publish.kind == SpanKind.PRODUCER
    assert trace_id(publish) == int(TRACE_ID, 16)
    assert posted_by(publish, spans) == int(CLIENT_SPAN, 16)
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == event_id
    assert publish.attributes["eventstream.duplicate"] is False
    # what is stored is the publish span's context, tracestate carried along
    assert env.traceparent == f"00-{TRACE_ID}-{span_id(publish):016x}-01"
    assert env.tracestate == "shop=checkout"

    first, retry = named(spans, "eventstream.handle PAY")
    for attempt, span in enumerate((first, retry), start=1):
        assert span.kind == SpanKind.CONSUMER
        assert trace_id(span) == int(TRACE_ID, 16)
        assert span.parent is not None
        assert span.parent.span_id == span_id(publish)
        assert dict(span.attributes or {}) | {"eventstream.retry.delay_ms": 0} == {
            "messaging.system": "eventstream",
            "messaging.operation.type": "process",
            "messaging.operation.name": "handle",
            "messaging.destination.name": "{" + traced_api.settings.prefix + "}:stream",
            "messaging.message.id": event_id,
            "eventstream.event.type": "PAY",
            "eventstream.attempt": attempt,
            "eventstream.outcome": "retry" if attempt == 1 else "processed",
            "eventstream.retry.delay_ms": 0,
            **({"error.type": "ConnectionError"} if attempt == 1 else {}),
        }

    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == "ConnectionError: card network down"
    [error] = first.events
    assert error.name == "exception"
    assert error.attributes is not None
    assert error.attributes["exception.type"] == "ConnectionError"
    assert error.attributes["exception.message"] == "card network down"
    assert not first.links

    assert retry.status.status_code == StatusCode.UNSET
    [link] = retry.links
    assert link.context.trace_id == int(TRACE_ID, 16)
    assert link.context.span_id == span_id(publish)
    assert link.attributes is not None
    assert link.attributes["eventstream.link"] == "retry"

    # the handler ran inside its try's span and sees the stored context
    assert [(e.attempt, sid) for e, sid in seen] == [(1, span_id(first)), (2, span_id(retry))]
    assert all(e.traceparent == env.traceparent for e, _ in seen)
    assert all(e.tracestate == "shop=checkout" for e, _ in seen)


async def test_a_sync_handler_runs_in_its_span_and_a_dead_try_records_the_error(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    seen: list[tuple[str, int]] = []
    app = EventStream("traced")

    @app.handler("REFUND")
    def refund(event: Event) -> None:
        seen.append((threading.current_thread().name, trace.get_current_span().get_span_context().span_id))
        raise PermanentError("refund window closed")

    await traced_api.accepted("REFUND", headers=HEADERS)
    await traced_api.burst(app)

    [dead] = named(spans, "eventstream.handle REFUND")
    [(thread, current)] = seen
    assert thread.startswith("handler")  # a worker thread, not the event loop's
    assert current == span_id(dead)
    assert dead.attributes is not None
    assert dead.attributes["eventstream.outcome"] == "dead"
    assert dead.status.status_code == StatusCode.ERROR
    [error] = dead.events
    assert error.attributes is not None
    assert error.attributes["exception.type"] == "PermanentError"
    assert "refund window closed" in str(error.attributes["exception.stacktrace"])


async def test_a_batch_gets_one_publish_span_that_parents_every_event(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    body = {
        "events": [
            {"type": "A", "payload": {}},
            {"type": "bad type!", "payload": {}},
            {"type": "A", "payload": {}},
        ]
    }
    r = await traced_api.client.post("/events/batch", json=body, headers=HEADERS)
    assert r.status_code == 200, r.text
    ids = [item["eventId"] for item in r.json()["results"] if "eventId" in item]
    assert len(ids) == 2
    envelopes = [await stored(traced_api, i) for i in ids]

    app = EventStream("traced")

    @app.handler("A")
    async def handle(event: Event) -> None:
        return None

    await traced_api.burst(app)

    [publish] = named(spans, "eventstream.publish batch")
    assert posted_by(publish, spans) == int(CLIENT_SPAN, 16)
    assert publish.attributes is not None
    assert publish.attributes["messaging.batch.message_count"] == 3
    assert publish.attributes["eventstream.accepted"] == 2
    assert {e.traceparent for e in envelopes} == {f"00-{TRACE_ID}-{span_id(publish):016x}-01"}
    tries = named(spans, "eventstream.handle A")
    assert len(tries) == 2
    assert all(t.parent is not None and t.parent.span_id == span_id(publish) for t in tries)


@pytest.mark.parametrize(
    "headers",
    [None, {"traceparent": "not-a-trace-context"}, {"traceparent": f"00-{'0' * 32}-{CLIENT_SPAN}-01"}],
    ids=["no header", "garbage", "all-zero trace id"],
)
async def test_without_a_valid_trace_context_nothing_is_stored_and_the_try_is_a_root_span(
    traced_api: Api, spans: InMemorySpanExporter, headers: dict[str, str] | None
) -> None:
    event_id = await traced_api.accepted("A", headers=headers)
    env = await stored(traced_api, event_id)
    assert (env.traceparent, env.tracestate) == (None, None)
    assert not named(spans, "eventstream.publish A")

    app = EventStream("traced")

    @app.handler("A")
    async def handle(event: Event) -> None:
        assert event.traceparent is None

    await traced_api.burst(app)
    [root] = named(spans, "eventstream.handle A")
    assert root.parent is None
    assert trace_id(root) != int(TRACE_ID, 16)


async def test_with_tracing_off_nothing_is_stored_and_no_span_is_made(
    api: Api, spans: InMemorySpanExporter
) -> None:
    assert not api.settings.tracing
    event_id = await api.accepted("A", headers=HEADERS)
    located = await api.broker.locate(event_id)
    assert located is not None
    assert "trace" not in located.envelope  # not a byte more in Redis
    assert decode_envelope(located.envelope).traceparent is None

    seen: list[Event] = []
    app = EventStream("untraced")

    @app.handler("A")
    async def handle(event: Event) -> None:
        seen.append(event)

    await api.burst(app)
    assert [e.traceparent for e in seen] == [None]
    # the application's provider is set (FastAPI's own HTTP spans use it), but EventStream makes none
    assert [s.name for s in spans.get_finished_spans() if s.name.startswith("eventstream.")] == []


def test_tracing_without_opentelemetry_installed_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if the extra were not installed
    with pytest.raises(ValidationError, match=r"pip install 'eventstream\[otel\]'"):
        Settings.model_validate({"tracing": True})


async def test_a_follow_up_is_handled_in_a_child_of_the_try_that_emitted_it(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    app = EventStream("traced")
    seen: list[Event] = []

    @app.handler("ORDER")
    def order(event: Event) -> None:  # sync: emitted from a worker thread, in its try's span
        event.emit("SHIP", {"order": 1})

    @app.handler("SHIP")
    async def ship(event: Event) -> None:
        seen.append(event)

    parent = await traced_api.accepted("ORDER", headers=HEADERS)
    await traced_api.burst(app)

    [handled] = named(spans, "eventstream.handle ORDER")
    [child] = named(spans, "eventstream.handle SHIP")
    assert trace_id(child) == int(TRACE_ID, 16)
    assert child.parent is not None
    assert child.parent.span_id == span_id(handled)
    [event] = seen
    assert event.causation_id == parent
    assert event.traceparent == f"00-{TRACE_ID}-{span_id(handled):016x}-01"
    assert event.tracestate == "shop=checkout"
