"""The guard's decisions on plain values, without HTTP: tokens, anonymous callers,
keys and what the rate-limit reply of the authorize script means."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.auth import limits
from eventstream.auth.guard import ANONYMOUS, Denied, Guard, Principal
from eventstream.broker import Broker
from eventstream.broker.keys import Keys
from eventstream.errors import Forbidden, PayloadTooLarge, RateLimited, Unauthorized
from eventstream.settings import Settings


@pytest.fixture
def guard(redis: Redis, settings: Settings) -> Guard:
    """A guard on loopback, bound to this test's keys."""
    g = Guard(settings, loopback=True)
    g.bind(Broker(redis, Keys(settings.prefix)))
    return g


# {code, scope, name, stored digest, limit, remaining, reset µs, retry µs, window s}
ALLOWED = [3, "ingest", "k", "d", 10, 7, 2_500_000, 0, 5]


def test_an_allowed_request_gets_the_rate_limit_fields() -> None:
    assert limits.outcome(ALLOWED, 3, "API key x") == {
        "RateLimit-Policy": "10;w=5",
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": "3",
    }


def test_no_rate_no_fields() -> None:
    assert limits.outcome([3, "", "", "", 0, 0, 0, 0, 0], 1, "API key x") == {}


def test_over_the_limit_is_rate_limited_with_the_time_to_wait() -> None:
    reply: list[Any] = [4, "ingest", "k", "d", 10, -2, 1_000_000, 1_200_001, 5]
    with pytest.raises(RateLimited) as caught:
        limits.outcome(reply, 4, "API key x")
    assert caught.value.retry_after_s == 2
    assert caught.value.headers["RateLimit-Remaining"] == "0"
    assert "API key x" in caught.value.detail
    assert "4 event(s)" in caught.value.detail


def test_more_than_the_burst_at_once_is_too_large_since_waiting_cannot_help() -> None:
    with pytest.raises(PayloadTooLarge, match="at most 10 events per request"):
        limits.outcome([4, "", "", "", 10, 10, 0, -1, 5], 11, "this client address")


def test_a_malformed_token_is_refused_without_redis(settings: Settings) -> None:
    guard = Guard(settings)  # not bound: no round trip may happen
    with pytest.raises(Unauthorized) as caught:
        guard.check_token("es_not-a-token")
    assert caught.value.invalid_token
    guard.check_token("es_0123456789ab_" + "A" * 43)  # well formed: for authorize to judge


async def test_without_loopback_or_insecure_no_one_is_anonymous(settings: Settings) -> None:
    guard = Guard(settings, loopback=False)
    with pytest.raises(Unauthorized, match="requires an API key"):
        await guard.screen_anonymous("/events", "localhost", None)
    with pytest.raises(Unauthorized):
        await guard.authorize("read", None, 1, "127.0.0.1", "GET /events")


@pytest.mark.parametrize(
    ("route", "host", "origin", "refusal"),
    [
        ("/events", "127.0.0.1:8000", None, None),
        ("/events", "", None, None),  # no Host header at all (HTTP/1.0)
        ("/events", "localhost", "http://localhost", None),  # the API's own page (/docs)
        ("/keys", "localhost", None, "scope admin"),
        ("/events", "evil.example", None, "loopback host"),
        ("/events", "localhost", "https://evil.example", "origin"),
    ],
)
async def test_anonymous_callers_on_loopback(
    guard: Guard, route: str, host: str, origin: str | None, refusal: str | None
) -> None:
    if refusal is None:
        await guard.screen_anonymous(route, host, origin)
        assert await guard.authorize("ingest", None, 1, "127.0.0.1", "POST /events") == (ANONYMOUS, {})
    else:
        with pytest.raises(Forbidden, match=refusal):
            await guard.screen_anonymous(route, host, origin)


async def test_a_key_is_the_caller_within_its_scope_and_denied_outside(guard: Guard) -> None:
    assert guard.registry is not None
    key, token = await guard.registry.create("robot", "ingest", 100.0, 10)
    key_id = key.id
    with pytest.raises(Unauthorized, match="requires an API key"):  # keys exist now
        await guard.screen_anonymous("/events", "localhost", None)
    caller, fields = await guard.authorize("ingest", token, 2, "127.0.0.1", "POST /events")
    assert caller == Principal(key_id, "robot", "ingest", f"key:{key_id}")
    assert fields["RateLimit-Remaining"] == "8"
    with pytest.raises(Denied) as caught:
        await guard.authorize("admin", token, 1, "127.0.0.1", "DELETE /failed-events/x")
    assert caught.value.caller == caller
    assert "DELETE /failed-events/x needs 'admin'" in caught.value.detail
    with pytest.raises(Unauthorized):
        await guard.authorize(
            "ingest", token[:-1] + ("A" if token[-1] != "A" else "B"), 1, "", "POST /events"
        )
