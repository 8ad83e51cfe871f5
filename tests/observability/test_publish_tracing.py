"""OpenTelemetry and in-process publishing: the current span's trace continues through
``EventStream.publish`` into the handler, as through a POST's traceparent."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from eventstream import Event, EventStream
from eventstream.event import decode_envelope
from tests.support.asgi import Api
from tests.support.publishing import publishing


async def test_publish_in_a_span_stores_its_publish_spans_context(
    traced_api: Api, spans: InMemorySpanExporter
) -> None:
    handled: list[Event] = []
    app = EventStream("traced")

    @app.handler("*")
    async def record(event: Event) -> None:
        handled.append(event)

    async with publishing(traced_api.settings) as publisher:
        untraced = await publisher.publish("PLAIN", {})
        with trace.get_tracer("shop").start_as_current_span("checkout") as checkout:
            accepted = await publisher.publish("PAY", {"amount": 5})
    located = await traced_api.broker.locate(accepted.event_id)
    assert located is not None
    env = decode_envelope(located.envelope)
    await traced_api.burst(app)

    [publish] = [s for s in spans.get_finished_spans() if s.name == "eventstream.publish PAY"]
    assert publish.kind == SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == checkout.get_span_context().span_id
    assert publish.context is not None
    assert publish.context.trace_id == checkout.get_span_context().trace_id
    assert env.traceparent is not None
    assert env.traceparent.startswith(f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-")
    assert [e.traceparent for e in handled if e.id == untraced.event_id] == [None]
    assert not [s for s in spans.get_finished_spans() if s.name == "eventstream.publish PLAIN"]
