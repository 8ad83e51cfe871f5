"""Worker-side tracing: each try of a handler in a CONSUMER span (see eventstream.tracing).

Imported only when ``EVENTSTREAM_TRACING`` is on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from eventstream import event
from eventstream.broker import StreamEntry
from eventstream.broker.keys import Keys
from eventstream.event import decode_envelope
from eventstream.settings import Settings
from eventstream.tracing import SYSTEM, W3C, remote_context, tracer
from eventstream.worker.dispatch import Dead, Done, Outcome, RetryLater

Run = Callable[[StreamEntry], Awaitable[Outcome]]


def traced(run: Run, settings: Settings) -> Run:
    """``run`` (the dispatcher's) with each try in a span; see the module docstring."""
    tracer_ = tracer("worker")
    destination = Keys(settings.prefix).stream
    event.follow_up_trace = _current_context  # a follow-up is a child of the try that emitted it

    async def run_traced(d: StreamEntry) -> Outcome:
        try:
            env = decode_envelope(d.envelope)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return await run(d)  # malformed: dead-lettered without a try, so without a span
        attempt = d.attempts + 1
        parent = Context()  # no stored context: a root span, not a child of the worker's context
        links: list[Link] | None = None
        if env.traceparent is not None:
            parent = remote_context(env.traceparent, env.tracestate)
            stored = trace.get_current_span(parent).get_span_context()
            if attempt > 1 and stored.is_valid:
                links = [Link(stored, {"eventstream.link": "retry", "eventstream.attempt": attempt})]
        with tracer_.start_as_current_span(
            f"eventstream.handle {env.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "handle",
                "messaging.destination.name": destination,
                "messaging.message.id": env.id,
                "eventstream.event.type": env.type,
                "eventstream.attempt": attempt,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            outcome = await run(d)
            _record(span, outcome)
        return outcome

    return run_traced


def _current_context() -> tuple[str, str | None] | None:
    """(traceparent, tracestate) of the current span (the handler's try), or None."""
    carrier: dict[str, str] = {}
    W3C.inject(carrier)
    parent = carrier.get("traceparent")
    return None if parent is None else (parent, carrier.get("tracestate"))


def _record(span: trace.Span, outcome: Outcome) -> None:
    if isinstance(outcome, Done):
        span.set_attribute("eventstream.outcome", "skipped" if outcome.skipped else "processed")
    elif isinstance(outcome, RetryLater):
        span.set_attribute("eventstream.outcome", "retry")
        span.set_attribute("eventstream.retry.delay_ms", max(0, outcome.due_ms - time.time_ns() // 1_000_000))
        _failed(span, outcome.reason, "")
    elif isinstance(outcome, Dead):
        span.set_attribute("eventstream.outcome", "dead")
        _failed(span, outcome.reason, outcome.traceback)


def _failed(span: trace.Span, reason: str, traceback: str) -> None:
    """The outcome carries the error as text (``Type: message``): record it as OTel's exception event."""
    kind, _, message = reason.partition(": ")
    attributes = {"exception.type": kind, "exception.message": message or kind}
    if traceback:
        attributes["exception.stacktrace"] = traceback
    span.add_event("exception", attributes)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, reason))
