"""Spans collected in memory from the process's global OpenTelemetry TracerProvider."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


class Collector(SimpleSpanProcessor):
    """Exports only while a test that asked for ``spans`` runs: the provider stays for
    the rest of the session (it cannot be unset), the spans of later tests do not pile up."""

    active = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            super().on_end(span)
