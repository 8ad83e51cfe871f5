"""The ways in answer alike: what ``Client`` and ``AsyncClient`` raise for an event the API
refuses is what ``EventStream.publish`` raises for it in-process (the same class, detail
and errors by location), and both return the same ``Accepted`` for a good one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventstream import Accepted, Event, EventStreamError
from tests.support.factories import make_settings
from tests.support.producers import Deployment, MakeProducer
from tests.support.publishing import publishing


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


REFUSED: list[tuple[str, Any, dict[str, Any]]] = [
    ("bad type!", {}, {}),
    ("T", [1, 2], {}),
    ("T", {"deep": nested(40)}, {}),
    ("T", {}, {"ordering_key": "k" * 257}),
    ("T", {}, {"ordering_key": "nul\x00"}),
    ("T", {}, {"source": "s" * 300}),
    ("T", {}, {"timestamp": "yesterday"}),
    ("T", {}, {"idempotency_key": "i" * 300}),
    ("T", {"big": "x" * 1_100_000}, {}),
]


@pytest.mark.parametrize(("type_", "payload", "options"), REFUSED)
def test_the_client_and_publish_refuse_alike(
    make_producer: MakeProducer,
    deployment: Deployment,
    tmp_path: Path,
    type_: str,
    payload: Any,
    options: dict[str, Any],
) -> None:
    producer = make_producer()
    before = deployment.received()
    with pytest.raises(EventStreamError) as over_http:
        producer.send(type_, payload, **options)
    settings = make_settings(deployment.cluster.redis_url, deployment.cluster.prefix, tmp_path)

    async def publish() -> None:
        async with publishing(settings) as app:
            await app.publish(type_, payload, **options)

    with pytest.raises(EventStreamError) as in_process:
        asyncio.run(publish())
    a, b = over_http.value, in_process.value
    assert type(a) is type(b)
    assert getattr(a, "detail", None) == getattr(b, "detail", None)
    assert getattr(a, "errors", None) == getattr(b, "errors", None)
    assert deployment.received() == before  # nothing was queued by either


def test_the_client_and_publish_accept_alike(
    make_producer: MakeProducer, deployment: Deployment, tmp_path: Path
) -> None:
    settings = make_settings(deployment.cluster.redis_url, deployment.cluster.prefix, tmp_path)
    when = datetime.fromisoformat("2026-12-06T10:00:00+01:00")

    async def publish() -> Accepted:
        async with publishing(settings) as app:
            return await app.publish("T", {"n": 1}, ordering_key="k", source="s", timestamp=when)

    by_client = make_producer().send("T", {"n": 1}, ordering_key="k", source="s", timestamp=when)
    in_process = asyncio.run(publish())
    assert (by_client.duplicate, in_process.duplicate) == (False, False)
    first = make_producer().get(by_client.event_id)
    second = make_producer().get(in_process.event_id)
    for field in ("type", "payload", "orderingKey", "source", "timestamp"):
        assert first[field] == second[field], field


@pytest.mark.parametrize(
    ("type_", "payload", "options"), [r for r in REFUSED if "idempotency_key" not in r[2]]
)
def test_a_handlers_follow_up_is_refused_as_publish_refuses_the_event(
    deployment: Deployment, tmp_path: Path, type_: str, payload: Any, options: dict[str, Any]
) -> None:
    settings = make_settings(deployment.cluster.redis_url, deployment.cluster.prefix, tmp_path)
    parent = Event("0190f4a2-0000-7000-8000-000000000001", "PARENT", {}, 1, datetime.now(UTC))
    with pytest.raises(EventStreamError) as emitted:
        parent.emit(type_, payload, **options)

    async def publish() -> None:
        async with publishing(settings) as app:
            await app.publish(type_, payload, **options)

    with pytest.raises(EventStreamError) as published:
        asyncio.run(publish())
    a, b = emitted.value, published.value
    assert (type(a), getattr(a, "detail", None), getattr(a, "errors", None)) == (
        type(b),
        getattr(b, "detail", None),
        getattr(b, "errors", None),
    )
    assert parent.follow_ups == ()
