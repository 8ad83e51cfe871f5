"""The ingest side of tracing (see ``eventstream.tracing``): the PRODUCER span of a POST
that carries a W3C trace context, and the context stored with its events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from eventstream.broker.keys import Keys
from eventstream.settings import Settings
from eventstream.tracing import SYSTEM, W3C, tracer

if TYPE_CHECKING:
    from eventstream.ingest.accept import Accepted, GroupCommit, Item


class IngestTracing:
    """Starts the publish span of a POST that carries a trace context."""

    def __init__(self, settings: Settings, ingest: GroupCommit) -> None:
        self.tracer = tracer("api")
        self.destination = Keys(settings.prefix).stream
        self.ingest = ingest

    def start(self, headers: Mapping[str, str], name: str, count: int = 1) -> Publish | None:
        """The publication of one request in its publish span, or None when the request
        carries no trace context."""
        parent: Context | None = W3C.extract(headers, context=Context())
        remote = trace.get_current_span(parent).get_span_context()
        if not remote.is_valid:
            return None  # no header, or one that is not valid W3C (ignored, as the spec says)
        if trace.get_current_span().get_span_context().trace_id == remote.trace_id:
            parent = None  # a server span continuing the header (FastAPI or ASGI instrumentation)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": self.destination,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        span = self.tracer.start_span(
            f"eventstream.publish {name}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        W3C.inject(carrier, context=trace.set_span_in_context(span))
        return Publish(self.ingest, span, (carrier["traceparent"], carrier.get("tracestate")))


@dataclass(slots=True)
class Publish:
    """One POST's publication in its publish span: a ``Publication`` (eventstream.ingest.accept)."""

    ingest: GroupCommit
    span: trace.Span
    context: tuple[str, str | None]  # stored with the events: (traceparent, tracestate)

    async def submit(self, items: list[Item]) -> list[Accepted]:
        """Enqueue inside the span, which ends with it (an error marks it failed)."""
        with trace.use_span(self.span, end_on_exit=True):
            accepted = await self.ingest.submit(items)
            if len(accepted) == 1:
                self.span.set_attribute("messaging.message.id", accepted[0].event_id)
                self.span.set_attribute("eventstream.duplicate", accepted[0].duplicate)
            else:
                dups = sum(1 for a in accepted if a.duplicate)
                self.span.set_attribute("eventstream.accepted", len(accepted) - dups)
                self.span.set_attribute("eventstream.duplicates", dups)
        return accepted
