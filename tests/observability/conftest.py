"""Fixtures for the log and tracing tests.

``cluster`` (tests/conftest.py) starts REAL ``eventstream`` processes whose stderr the
log tests parse. ``spans`` is an in-memory span exporter on the process's
global OpenTelemetry TracerProvider, installed once per session (OpenTelemetry allows
one global provider per process) and emptied around each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.asgi import Api, running
from tests.support.factories import make_settings
from tests.support.tracing import Collector


@pytest.fixture(scope="session")
def collector() -> Collector:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    processor = Collector(InMemorySpanExporter())
    provider.add_span_processor(processor)
    return processor


@pytest.fixture
def spans(collector: Collector) -> Iterator[InMemorySpanExporter]:
    exporter = collector.span_exporter
    assert isinstance(exporter, InMemorySpanExporter)
    exporter.clear()
    collector.active = True
    try:
        yield exporter
    finally:
        collector.active = False
        exporter.clear()


@pytest.fixture
async def api(redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The real app (over ASGI) with tracing off, the default."""
    async with running(make_settings(redis_url, prefix, tmp_path)) as a:
        yield a


@pytest.fixture
async def traced_api(redis_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The real app (over ASGI) with EVENTSTREAM_TRACING on."""
    async with running(make_settings(redis_url, prefix, tmp_path, tracing=True)) as a:
        yield a
