"""EventStream: the handler registry, its policy checks, default_app and load_app."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest

from eventstream.app import WILDCARD, EventStream, Handler, default_app, load_app
from eventstream.errors import ConfigError
from eventstream.event import Event
from tests.support.apps import sample


def test_register_and_look_up() -> None:
    app = EventStream("shop")

    @app.handler("A", max_attempts=3, retry_delay=0.5, timeout=2.0)
    async def a(event: Event) -> None:
        return None

    @app.handler("B")
    def b(event: Event) -> None:
        return None

    ha = app.handler_for("A")
    assert ha == Handler("A", a, True, 3, 0.5, 2.0)
    hb = app.handler_for("B")
    assert hb == Handler("B", b, False, None, None, None)
    assert app.handler_for("C") is None
    assert app.types == ["A", "B"]
    assert app.name == "shop"


def test_decorator_returns_the_function_unchanged() -> None:
    app = EventStream()

    async def f(event: Event) -> None:
        return None

    assert app.handler("A")(f) is f


def test_duplicate_handler_is_rejected() -> None:
    app = EventStream()

    @app.handler("A")
    async def first(event: Event) -> None:
        return None

    with pytest.raises(ConfigError, match="already registered"):

        @app.handler("A")
        async def second(event: Event) -> None:
            return None

    handler = app.handler_for("A")
    assert handler is not None
    assert handler.func is first


def test_duplicate_wildcard_is_rejected() -> None:
    app = EventStream()
    app.handler(WILDCARD)(lambda e: None)
    with pytest.raises(ConfigError):
        app.handler("*")(lambda e: None)


def test_wildcard_catches_types_without_their_own_handler() -> None:
    app = EventStream()

    @app.handler("A")
    async def a(event: Event) -> None:
        return None

    @app.handler("*")
    async def anything(event: Event) -> None:
        return None

    for_a = app.handler_for("A")
    for_z = app.handler_for("Z")
    assert for_a is not None
    assert for_a.func is a
    assert for_z is not None
    assert for_z.func is anything
    assert for_z.event_type == "*"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"retry_delay": -0.1}, "retry_delay"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"key_concurrency": 0}, "key_concurrency"),
        ({"key_concurrency": -2}, "key_concurrency"),
        ({"key_concurrency": 1.5}, "key_concurrency"),
        ({"key_concurrency": True}, "key_concurrency"),
    ],
)
def test_invalid_policy_values_are_rejected(policy: dict[str, float], message: str) -> None:
    app = EventStream()
    with pytest.raises(ConfigError, match=message):
        app.handler("A", **policy)  # type: ignore[arg-type]
    assert app.types == []


def test_edge_policy_values_are_accepted() -> None:
    app = EventStream()
    app.handler("A", max_attempts=1, retry_delay=0, timeout=0.001)(lambda e: None)
    h = app.handler_for("A")
    assert h is not None
    assert (h.max_attempts, h.retry_delay, h.timeout) == (1, 0, 0.001)
    assert h.key_concurrency == 1  # the default: one at a time per ordering key


def test_key_limits_name_each_type_and_the_wildcard() -> None:
    app = EventStream()
    app.handler("A", key_concurrency=3)(lambda e: None)
    app.handler("B")(lambda e: None)
    app.handler("*", key_concurrency=2)(lambda e: None)
    assert app.key_limits == {"A": 3, "B": 1, "*": 2}


def test_async_detection() -> None:
    app = EventStream()

    async def coro(event: Event) -> None:
        return None

    def plain(event: Event) -> None:
        return None

    app.handler("coro")(coro)
    app.handler("plain")(plain)
    app.handler("partial")(functools.partial(coro))
    checks = {t: app.handler_for(t) for t in ("coro", "plain", "partial")}
    assert {t: h.is_async for t, h in checks.items() if h} == {"coro": True, "plain": False, "partial": True}


async def test_default_app_handles_every_type() -> None:
    app = default_app()
    assert app.name == "default"
    for type_ in ("A", "payment.created", "anything:at-all"):
        handler = app.handler_for(type_)
        assert handler is not None
        assert handler.is_async
    handler = app.handler_for("x")
    assert handler is not None
    event = Event("id", "x", {}, 1, datetime.now(UTC))
    assert await handler.func(event) is None  # type: ignore[func-returns-value,misc]


def test_default_apps_are_independent() -> None:
    a, b = default_app(), default_app()
    assert a is not b
    a.handler("extra")(lambda e: None)
    assert b.types == ["*"]


@pytest.mark.parametrize("spec", [None, ""])
def test_load_app_without_spec_is_the_default_app(spec: str | None) -> None:
    app = load_app(spec)
    assert app.name == "default"
    assert app.types == ["*"]


def test_load_app_by_module_defaults_to_attribute_app() -> None:
    assert load_app("tests.support.apps.sample") is sample.app
    assert load_app("tests.support.apps.sample:") is sample.app
    assert load_app("tests.support.apps.sample:app") is sample.app
    assert load_app("tests.support.apps.sample:other") is sample.other


def test_load_app_unknown_module() -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        load_app("no_such_module_xyz:app")


def test_load_app_missing_attribute() -> None:
    with pytest.raises(ConfigError, match=r"not an EventStream instance \(got NoneType\)"):
        load_app("tests.support.apps.sample:missing")


def test_load_app_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"not an EventStream instance \(got dict\)"):
        load_app("tests.support.apps.sample:not_an_app")
    with pytest.raises(ConfigError, match="got module"):
        load_app("tests.support.apps:sample")
