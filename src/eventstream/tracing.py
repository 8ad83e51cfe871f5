"""Optional OpenTelemetry tracing: ``pip install 'eventstream[otel]'``, ``EVENTSTREAM_TRACING=true``.

How a trace flows:

- ingest: a POST that carries a W3C ``traceparent`` header gets a PRODUCER span
  ``eventstream.publish TYPE`` (``eventstream.publish batch`` for a batch), a child of
  the spans the HTTP layer opens when they continue the header (recent FastAPI opens
  a server span and an endpoint span itself once a provider is set; so do
  ``opentelemetry-instrumentation-fastapi`` and the ASGI instrumentation), else of the
  header's context; while a provider is set, ingest takes the middleware stack for
  that (eventstream.api.fastpath). That span's context is stored in
  the envelope (``traceparent``, ``tracestate``); a POST without a valid header stores
  nothing and gets no publish span.
- worker: each try of a handler runs in a CONSUMER span ``eventstream.handle TYPE``,
  current while the handler runs (in the thread of a sync handler too). Its parent is
  the stored context, so every try of one event sits in the POST's trace; a retry
  also carries a link to that context. An event without one gets a root span.

This module holds what both sides share; the ingest side (the publish span and the
context stored with the events) is ``eventstream.ingest.tracing``, the worker side
``eventstream.worker.tracing``.
Nothing imports either while tracing is off: no per-event work, not even the import.
Spans go to the global TracerProvider: the application's own when it set one (or
``opentelemetry-instrument`` did), otherwise one built here from the standard
``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_EXPORTER``, the exporter's own variables).
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventstream.version import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger("eventstream.tracing")

SYSTEM = "eventstream"
EXPORTER_GROUP = "opentelemetry_traces_exporter"  # the entry points exporters register

W3C = TraceContextTextMapPropagator()


def tracer(role: str) -> trace.Tracer:
    """The tracer of this process; builds a TracerProvider from ``OTEL_*`` if none is set."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _install_provider(role)
    return trace.get_tracer("eventstream", __version__)


def _install_provider(role: str) -> None:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"eventstream-{role}"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _exporters() -> list[SpanExporter]:
    """The exporters named by OTEL_TRACES_EXPORTER (default ``otlp``; ``none``: none)."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        found = list(entry_points(group=EXPORTER_GROUP, name=name))
        if not found:
            log.warning(
                "tracing: span exporter not installed, spans are dropped",
                exporter=name,
                hint="pip install opentelemetry-exporter-otlp, or set OTEL_TRACES_EXPORTER",
            )
            continue
        exporters.append(found[0].load()())
    return exporters


def remote_context(traceparent: str, tracestate: str | None) -> Context:
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return W3C.extract(carrier, context=Context())
