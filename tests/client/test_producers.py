"""Client and AsyncClient (one body of tests, both clients) against real API and worker
processes: idempotent sends, retries after lost replies, 429 and 503, errors, batches, the DLQ."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from eventstream import (
    Accepted,
    Forbidden,
    NotFound,
    RateLimited,
    Rejected,
    Unauthorized,
    Unavailable,
    ValidationError,
)
from tests.support.producers import Deployment, MakeProducer, Producer
from tests.support.proxy import PASS, RESET, truncate
from tests.support.waiting import wait_for


def test_send_is_accepted_and_the_same_key_is_a_duplicate_of_it(producer: Producer) -> None:
    when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    key = f"order-{producer.kind}-{time.time_ns()}"
    first = producer.send("OK", {"n": 1}, idempotency_key=key, ordering_key="acct-7",
                          source="shop", severity="info", timestamp=when)  # fmt: skip
    again = producer.send("OK", {"n": 1}, idempotency_key=key, ordering_key="acct-7",
                          source="shop", severity="info", timestamp=when)  # fmt: skip
    assert first == Accepted(first.event_id, duplicate=False)
    assert again == Accepted(first.event_id, duplicate=True)
    event = producer.get(first.event_id)
    assert (event["type"], event["payload"], event["orderingKey"]) == ("OK", {"n": 1}, "acct-7")
    assert (event["source"], event["severity"], event["idempotencyKey"]) == ("shop", "info", key)
    assert datetime.fromisoformat(event["timestamp"]) == when


def test_every_send_carries_a_new_key_of_its_own(producer: Producer) -> None:
    one, two = producer.send("OK", {"same": True}), producer.send("OK", {"same": True})
    assert one.event_id != two.event_id
    assert not one.duplicate
    assert not two.duplicate
    assert producer.get(one.event_id)["idempotencyKey"] != producer.get(two.event_id)["idempotencyKey"]


def test_a_naive_timestamp_is_refused_before_sending(producer: Producer) -> None:
    with pytest.raises(ValidationError, match="timezone") as caught:
        producer.send("OK", {}, timestamp=datetime(2026, 1, 1))
    assert (caught.value.status, caught.value.problem) == (422, {})
    assert producer.requests == []


def test_a_lost_reply_is_retried_and_the_event_exists_once(
    deployment: Deployment, make_producer: MakeProducer
) -> None:
    producer = make_producer(f"http://127.0.0.1:{deployment.api_proxy.port}", retry_base_s=0.01)
    before = deployment.received()
    deployment.api_proxy.set(truncate(0, once=True))  # the server accepts; its reply is dropped
    result = producer.send("OK", {"lost": "reply"})
    assert producer.requests == ["POST /events", "POST /events"]
    assert result.duplicate is False  # the duplicate was the client's own first try
    assert deployment.received() == before + 1
    assert producer.get(result.event_id)["payload"] == {"lost": "reply"}


def test_a_batch_whose_reply_is_lost_is_retried_and_enqueued_once(
    deployment: Deployment, make_producer: MakeProducer
) -> None:
    producer = make_producer(f"http://127.0.0.1:{deployment.api_proxy.port}", retry_base_s=0.01)
    events = [{"type": "OK", "payload": {"i": i}} for i in range(3)]
    before = deployment.received()
    deployment.api_proxy.set(truncate(0, once=True))
    results = producer.send_batch(events)
    assert producer.requests == ["POST /events/batch", "POST /events/batch"]
    assert [type(r) for r in results] == [Accepted] * 3
    assert all(isinstance(r, Accepted) and not r.duplicate for r in results)
    assert deployment.received() == before + 3
    assert events == [{"type": "OK", "payload": {"i": i}} for i in range(3)]  # the caller's dicts untouched


def test_the_callers_own_key_gets_the_servers_word_on_a_retried_batch(
    deployment: Deployment, make_producer: MakeProducer
) -> None:
    producer = make_producer(f"http://127.0.0.1:{deployment.api_proxy.port}", retry_base_s=0.01)
    mine = f"mine-{producer.kind}-{time.time_ns()}"
    deployment.api_proxy.set(truncate(0, once=True))
    results = producer.send_batch([{"type": "OK", "payload": {}, "id": mine}, {"type": "OK", "payload": {}}])
    assert [r.duplicate for r in results if isinstance(r, Accepted)] == [True, False]


def test_429_waits_at_least_retry_after_then_succeeds(
    deployment: Deployment, make_producer: MakeProducer
) -> None:
    producer = make_producer(api_key=deployment.key("ingest", rate=1, burst=1))
    producer.send("OK", {"n": 1})
    started = time.monotonic()
    result = producer.send("OK", {"n": 2})
    assert time.monotonic() - started >= 1.0  # Retry-After: 1
    assert not result.duplicate
    assert producer.requests == ["POST /events"] * 3


def test_429_beyond_the_budget_is_rate_limited(deployment: Deployment, make_producer: MakeProducer) -> None:
    producer = make_producer(api_key=deployment.key("ingest", rate=0.01, burst=1), retry_budget_s=5)
    producer.send("OK", {"n": 1})
    with pytest.raises(RateLimited) as caught:
        producer.send("OK", {"n": 2})
    assert caught.value.retry_after_s >= 90
    assert caught.value.status == 429
    assert caught.value.headers["ratelimit-remaining"] == "0"
    assert producer.requests == ["POST /events"] * 2  # no point waiting past the budget


def test_503_while_redis_is_away_is_retried_until_it_is_back(
    deployment: Deployment, make_producer: MakeProducer
) -> None:
    producer = make_producer(deployment.shaky.url, retry_budget_s=20, max_attempts=20)
    before = deployment.received()
    deployment.redis_proxy.set(RESET)
    back = threading.Timer(1.5, deployment.redis_proxy.set, [PASS])
    back.start()
    try:
        result = producer.send("OK", {"outage": True})
    finally:
        back.join()
    assert len(producer.requests) >= 2
    assert deployment.received() == before + 1
    assert producer.get(result.event_id)["payload"] == {"outage": True}


def test_503_beyond_the_budget_is_unavailable(deployment: Deployment, make_producer: MakeProducer) -> None:
    producer = make_producer(deployment.shaky.url, retry_budget_s=2, max_attempts=3, retry_base_s=0.01)
    deployment.redis_proxy.set(RESET)
    try:
        with pytest.raises(Unavailable) as caught:
            producer.send("OK", {})
    finally:
        deployment.redis_proxy.set(PASS)
    assert caught.value.status == 503
    assert caught.value.problem["status"] == 503
    assert 2 <= len(producer.requests) <= 3


def test_an_unreachable_api_is_unavailable_with_the_cause(make_producer: MakeProducer) -> None:
    producer = make_producer("http://127.0.0.1:9", max_attempts=2, retry_base_s=0.01)
    with pytest.raises(Unavailable) as caught:
        producer.send("OK", {})
    assert caught.value.__cause__ is not None
    assert len(producer.requests) == 2


def test_an_invalid_event_is_refused_at_once(producer: Producer) -> None:
    with pytest.raises(ValidationError) as caught:
        producer.send("bad type!", {})
    assert caught.value.status == 422
    assert [e["loc"] for e in caught.value.errors] == ["$.type"]
    assert caught.value.problem["errors"] == [{"loc": "$.type", "msg": caught.value.errors[0]["msg"]}]
    assert producer.requests == ["POST /events"]  # never retried


def test_auth_failures_and_unknown_ids(deployment: Deployment, make_producer: MakeProducer) -> None:
    with pytest.raises(Unauthorized) as unauthorized:
        make_producer(api_key="es_nope_nope").send("OK", {})
    assert unauthorized.value.status == 401
    reader = make_producer(api_key=deployment.key("read"))
    with pytest.raises(Forbidden) as forbidden:
        reader.send("OK", {})
    assert forbidden.value.status == 403
    assert reader.requests == ["POST /events"]
    with pytest.raises(NotFound) as missing:
        reader.get("no-such-event")
    assert missing.value.status == 404
    assert missing.value.ident == "no-such-event"


def test_a_long_batch_is_split_and_answered_in_order(make_producer: MakeProducer) -> None:
    producer = make_producer(max_batch=2)
    results = producer.send_batch([{"type": "OK", "payload": {"i": i}} for i in range(5)])
    assert producer.requests == ["POST /events/batch"] * 3
    assert all(isinstance(r, Accepted) for r in results)
    assert [producer.get(r.event_id)["payload"]["i"] for r in results if isinstance(r, Accepted)] == list(
        range(5)
    )


def test_a_batch_is_split_by_size_and_an_item_too_large_is_rejected_unsent(
    make_producer: MakeProducer,
) -> None:
    producer = make_producer(max_body_bytes=2048)
    events = [{"type": "OK", "payload": {"s": "x" * 900}} for _ in range(4)]
    events.insert(2, {"type": "OK", "payload": {"s": "y" * 3000}})
    results = producer.send_batch(events)
    assert len(producer.requests) == 2  # two items of ~950 bytes per request
    assert [type(r) for r in results] == [Accepted, Accepted, Rejected, Accepted, Accepted]
    too_large = results[2]
    assert isinstance(too_large, Rejected)
    assert (too_large.index, too_large.status) == (2, 413)


def test_a_batch_answers_good_and_bad_items_each_with_its_index(make_producer: MakeProducer) -> None:
    producer = make_producer(max_batch=3)
    events: list[dict[str, Any]] = [
        {"type": "OK", "payload": {}},
        {"type": "bad type!", "payload": {}},
        {"type": "OK", "payload": {}},
        {"type": "OK"},
        {"type": "OK", "payload": {}, "orderingKey": "k"},
    ]
    results = producer.send_batch(events)
    assert [type(r) for r in results] == [Accepted, Rejected, Accepted, Rejected, Accepted]
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert [(r.index, r.status) for r in rejected] == [(1, 422), (3, 422)]
    assert "payload" in rejected[1].detail
    assert [[e["loc"] for e in r.errors] for r in rejected] == [["$.type"], ["$"]]
    assert producer.send_batch([]) == []


def _dead(producer: Producer, event_id: str) -> bool:
    return bool(producer.get(event_id)["status"] == "dead")


def test_failed_pages_through_the_dlq_and_replays_by_id_and_by_type(producer: Producer) -> None:
    kind = f"NOHANDLER_{producer.kind}_{time.time_ns()}"
    ids = [producer.send(kind, {"i": i}).event_id for i in range(5)]
    for event_id in ids:
        wait_for(lambda e=event_id: _dead(producer, e), f"{event_id} to be dead", 30)  # type: ignore[misc]
    before = len(producer.requests)
    items = producer.failed(type=kind, limit=2)
    assert producer.requests[before:] == ["GET /failed-events"] * 3  # 2 + 2 + 1
    assert sorted(i["id"] for i in items) == sorted(ids)
    assert all("handler" in i["reason"] for i in items)

    assert producer.replay_dead(ids[0]) == {"replayed": 1, "eventId": ids[0]}
    answer = producer.replay_dead(type=kind)
    assert answer["replayed"] >= 4
    assert answer["nextCursor"] is None
    with pytest.raises(ValueError, match="not both"):
        producer.replay_dead(ids[0], type=kind)


def test_replaying_an_event_that_is_not_dead_is_not_found(producer: Producer) -> None:
    done = producer.send("OK", {})
    wait_for(lambda: producer.get(done.event_id)["status"] == "processed", "the event to be processed", 30)
    with pytest.raises(NotFound) as caught:
        producer.replay_dead(done.event_id)
    assert caught.value.problem["eventStatus"] == "processed"
    assert "is processed" in str(caught.value)
    assert producer.requests[-1] == f"POST /failed-events/{done.event_id}/replay"
