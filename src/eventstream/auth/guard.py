"""Authentication, scopes and rate limits for every HTTP request, in one ASGI middleware.

The middleware sits outside the ingest fast path (eventstream.api.fastpath), so
``POST /events`` and ``/events/batch`` pass through it like every other route.

Policy, default deny (eventstream.auth.policy): a route is open, needs ``ingest``,
``read`` or ``admin``; anything not classified needs ``admin``, so a route added
later is closed until someone decides otherwise.

Checking a key is ONE round trip: the script ``authorize.lua`` reads the key's
record, compares the SHA-256 digest of the presented token with the stored one,
checks revocation and scope, and only then charges the key's GCRA bucket, all
atomically. The digest must be compared inside the script, since it alone can
decide before charging without a second round trip; a plain comparison of digests
is safe there, because timing can only tell how many leading bytes of two SHA-256
digests agree, and nobody can choose a token whose digest has a wanted prefix.
Python then confirms the digest the script returns with ``hmac.compare_digest``.
An unknown id and a wrong secret take the same path (the script compares against
an empty digest; Python compares against a dummy one) and give the same 401.
A malformed token is refused without a round trip: its shape is public.

Rate limits are GCRA on the Redis server's clock (``TIME``), so they hold across
any number of API processes. A request costs 1; a batch costs its number of events,
so for a batch the body is read (bounded by EVENTSTREAM_MAX_BODY_BYTES) and its items
counted before the script runs; the endpoint decodes the same buffered body. A
refused request (401/403/429) reaches no endpoint: nothing is enqueued.

Without credentials: when no key exists and the API listens on loopback (or was
started with ``--insecure``), the request is anonymous; otherwise 401. Whether any
key exists is cached per process: "yes" for good (keys are never deleted, only
revoked), "no" for at most ``NO_KEYS_TTL_S``, so a key created while the API runs
switches it to "keys required" within that time. While Redis cannot be reached, an
API on loopback that has already seen "no keys" keeps that answer (so local reads of
the store keep working); one that never got an answer, or one started with
``--insecure``, answers 503: it cannot know whether keys are required. Key records
are never cached: a revoked key is refused on its next request. Anonymous requests
cost no round trip unless ``EVENTSTREAM_ANONYMOUS_RATE`` is set.

An anonymous request is refused (403) when it would manage keys (the first key is
made with ``eventstream keys create``), and, so that a web page the user visits cannot
drive the API through the browser, when its ``Origin`` header is neither allowed by
EVENTSTREAM_CORS_ORIGINS nor the API's own loopback origin, or (on loopback) when
its ``Host`` is not a loopback name or address: a DNS-rebinding page reaches
127.0.0.1 under its own host name.

Everything that can refuse a request without its body (a malformed token, no key
where one is needed, the anonymous checks) runs before a batch body is read.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstream.api import problems
from eventstream.api.deps import read_body
from eventstream.auth import trail
from eventstream.auth.apikeys import KeyRegistry, digest, parse_token
from eventstream.auth.policy import INGEST_BATCH, manages_keys, required_scope
from eventstream.broker import Broker
from eventstream.errors import (
    EventStreamError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    RedisUnavailable,
    Unauthorized,
    Unavailable,
)
from eventstream.settings import Settings

NO_KEYS_TTL_S = 1.0
PRINCIPAL = "eventstream.principal"  # the scope entry endpoints read the caller from
_DUMMY = digest("es_000000000000_" + "0" * 43)
NEED_KEY = (
    "this API requires an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>` "
    "(create one with `eventstream keys create`)"
)
INVALID = "the API key is not valid"
KEYS_NEED_ADMIN_KEY = (
    "managing API keys over HTTP needs an API key with scope admin, even where anonymous use is "
    "allowed: create the first key with `eventstream keys create --name NAME --scope admin`"
)
UNKNOWN = (
    "Redis is unreachable and this API process has not yet learned whether API keys exist, so it "
    "cannot serve anonymous requests; retry later"
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key (id, name, scope) or anonymous loopback use (every scope).

    ``namespace``: where its idempotency keys live (eventstream.broker.keys): the
    namespace it shares with other keys (``ns:<name>``), else its own (``key:<id>``);
    None for anonymous use."""

    key_id: str | None
    name: str
    scope: str
    namespace: str | None = None

    @property
    def label(self) -> tuple[str, str]:
        return (self.key_id or "anonymous", self.name)


ANONYMOUS = Principal(None, "anonymous", "admin")


def principal_of(request: Request) -> Principal:
    p: Principal = request.scope.get(PRINCIPAL, ANONYMOUS)
    return p


class _BatchCount(msgspec.Struct):
    events: list[msgspec.Raw] = []


_count_decoder = msgspec.json.Decoder(_BatchCount)


def batch_cost(body: bytes, max_batch: int) -> int:
    """What a batch body costs: its number of events; 1 when it will be refused anyway."""
    try:
        n = len(_count_decoder.decode(body).events)
    except Exception:
        return 1
    return n if 1 <= n <= max_batch else 1


class Guard:
    """What the middleware needs: settings, the listen mode and, once started, Redis."""

    def __init__(self, settings: Settings, *, loopback: bool = True, insecure: bool = False) -> None:
        self.settings = settings
        self.anonymous_allowed = loopback or insecure
        self.loopback = loopback
        self.insecure = insecure
        self.broker: Broker | None = None
        self.registry: KeyRegistry | None = None
        self._keys_exist = False
        self._known = False  # whether Redis ever answered "are there keys"
        self._checked_until = 0.0
        self._checking: asyncio.Task[bool] | None = None

    def bind(self, broker: Broker) -> None:
        self.broker = broker
        self.registry = KeyRegistry(broker)

    async def keys_exist(self) -> bool:
        """Whether any key was ever created; "no" is cached for NO_KEYS_TTL_S."""
        if self._keys_exist or time.monotonic() < self._checked_until:
            return self._keys_exist
        task = self._checking
        if task is None:
            assert self.registry is not None
            task = asyncio.get_running_loop().create_task(self.registry.any_keys())
            task.add_done_callback(self._checked)
            self._checking = task
        try:
            return await asyncio.shield(task)
        except RedisUnavailable:
            if self.loopback and self._known:
                # Redis unreachable: on loopback keep the last answer, so the store's
                # reads and validation keep working for local use while Redis is down
                return self._keys_exist
            # never answered (keys may exist: fail closed), or --insecure
            raise Unavailable(UNKNOWN) from None

    def _checked(self, task: asyncio.Task[bool]) -> None:
        self._checking = None
        if not task.cancelled() and task.exception() is None:
            self._keys_exist = task.result()
            self._known = True
            self._checked_until = time.monotonic() + NO_KEYS_TTL_S

    async def screen(self, token: str | None, route: str, headers: list[tuple[bytes, bytes]]) -> None:
        """What can be refused before the body is read: a malformed token (401), no key
        where one is needed (401), and the anonymous checks (403; module docstring)."""
        if token is not None:
            if parse_token(token) is None:
                hmac.compare_digest(digest(token), _DUMMY)
                raise Unauthorized(INVALID, invalid_token=True)
            return
        if not self.anonymous_allowed or await self.keys_exist():
            raise Unauthorized(NEED_KEY)
        if manages_keys(route):
            raise Forbidden(KEYS_NEED_ADMIN_KEY)
        host = (_header(headers, b"host") or b"").decode("latin-1")
        if self.loopback and host and not is_loopback_host(host):
            raise Forbidden(
                f"anonymous requests must name a loopback host (localhost, 127.0.0.1 or [::1]), "
                f"not {host[:100]!r}; send an API key to call this API under another name"
            )
        origin = _header(headers, b"origin")
        if origin is not None:
            o = origin.decode("latin-1")
            if not (self._origin_allowed(o) or (is_loopback_host(host) and o in _own_origins(host))):
                raise Forbidden(
                    f"anonymous requests from the web page origin {o[:100]!r} are refused: allow it "
                    "with EVENTSTREAM_CORS_ORIGINS, or send an API key"
                )

    def _origin_allowed(self, origin: str) -> bool:
        allowed = {o.strip() for o in self.settings.cors_origins.split(",") if o.strip()}
        return "*" in allowed or origin in allowed

    async def authorize(
        self, need: str, token: str | None, cost: int, client: str, what: str
    ) -> tuple[Principal, dict[str, str]]:
        """The caller and the RateLimit-* headers for its response; raises 401/403/429.
        Call ``screen`` first: it refuses what needs no round trip."""
        if token is None:
            if not self.anonymous_allowed or await self.keys_exist():
                raise Unauthorized(NEED_KEY)
            rate = self.settings.anonymous_rate
            if rate <= 0:
                return ANONYMOUS, {}
            burst = self.settings.anonymous_burst or math.ceil(rate)
            assert self.broker is not None
            reply = await self.broker.authorize_address(client, cost, rate, burst)
            return ANONYMOUS, _rate_outcome(reply, cost, "this client address")
        presented = digest(token)
        key_id = parse_token(token)
        if key_id is None:  # screen refused it already; kept so authorize stands alone
            hmac.compare_digest(presented, _DUMMY)
            raise Unauthorized(INVALID, invalid_token=True)
        assert self.broker is not None
        reply = await self.broker.authorize_key(key_id, cost, presented, need)
        code, scope, name, stored = int(reply[0]), str(reply[1]), str(reply[2]), str(reply[3])
        shared = str(reply[9]) if len(reply) > 9 else ""
        matches = hmac.compare_digest(stored or _DUMMY, presented)
        if code == 0 or not matches:
            raise Unauthorized(INVALID, invalid_token=True)
        if code == 1:
            raise Unauthorized(f"API key {key_id} ({name}) was revoked", invalid_token=True)
        caller = Principal(key_id, name, scope, f"ns:{shared}" if shared else f"key:{key_id}")
        if code == 2:
            raise _Denied(
                caller,
                f"API key {key_id} has scope {scope!r}; {what} needs "
                + ("'admin'" if need == "admin" else f"{need!r} (or 'admin')"),
            )
        return caller, _rate_outcome(reply, cost, f"API key {key_id}")


@functools.lru_cache(maxsize=1024)  # a handful of distinct Host values; parsed once each
def is_loopback_host(host: str) -> bool:
    """Whether a Host header names loopback: localhost, 127.0.0.0/8 or [::1], alone or
    with a port (digits). Anything else after the name (``[::1]evil.example``,
    ``localhost:1@evil``) is not a host header a browser sends for loopback."""
    m = _HOST_RE.fullmatch(host.strip().lower())
    if m is None:
        return False
    name = m.group(1) or m.group(2).removesuffix(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# [IPv6] or a name / IPv4 address, then an optional :port of digits, and nothing else
_HOST_RE = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::[0-9]{1,5})?")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _own_origins(host: str) -> tuple[str, str]:
    """The origins of pages this API serves itself (/docs) under ``host``."""
    return (f"http://{host}", f"https://{host}")


class _Denied(Forbidden):
    def __init__(self, caller: Principal, detail: str) -> None:
        super().__init__(detail)
        self.caller = caller


def _rate_outcome(reply: list[Any], cost: int, whose: str) -> dict[str, str]:
    """RateLimit-* headers for an allowed request; raises RateLimited (429) or, for a
    batch larger than the burst, PayloadTooLarge (413: waiting cannot help)."""
    code, limit, left, reset_us, retry_us, window_s = (
        int(reply[0]),
        int(reply[4]),
        int(reply[5]),
        int(reply[6]),
        int(reply[7]),
        int(reply[8]),
    )
    if limit <= 0:
        return {}
    headers = {
        "RateLimit-Policy": f"{limit};w={max(1, window_s)}",
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, left)),
        "RateLimit-Reset": str(math.ceil(reset_us / 1_000_000)),
    }
    if code == 4:
        if retry_us < 0:
            raise PayloadTooLarge(
                f"this request counts as {cost} events, more than the burst of {limit} that {whose} "
                f"may send at once: send at most {limit} events per request"
            )
        retry_s = max(1, math.ceil(retry_us / 1_000_000))
        raise RateLimited(
            f"rate limit of {whose} exceeded: this request counts as {cost} event(s) and "
            f"{max(0, left)} of {limit} are left; retry in {retry_s} s. Nothing was done.",
            retry_s,
            headers,
        )
    return headers


def _credentials(scope: Scope) -> tuple[str | None, bool]:
    """(token, whether an Authorization header was present but not Bearer)."""
    auth = api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    if auth is not None:
        kind, _, token = auth.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return None, True
        return token.strip(), False
    if api_key is not None:
        return api_key.strip(), False
    return None, False


class SecurityMiddleware:
    """Authenticate, authorize and rate-limit; see the module docstring."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        g = self.guard
        method, path = scope["method"], get_route_path(scope)  # the route, without root_path
        need = required_scope(method, path, g.settings.metrics_public)
        if need is None:
            await self.app(scope, receive, send)
            return
        what = f"{method} {path}"
        caller: Principal | None = None
        token: str | None = None
        try:
            token, bad_scheme = _credentials(scope)
            if bad_scheme:
                raise Unauthorized(
                    "the Authorization header must be `Bearer <key>` (or send the key in X-API-Key)",
                    invalid_token=True,
                )
            await g.screen(token, path, scope["headers"])
            cost, body_error = 1, None
            metered = token is not None or g.settings.anonymous_rate > 0
            if metered and method == "POST" and path == INGEST_BATCH:
                try:
                    body = await read_body(Request(scope, receive), g.settings.max_body_bytes)
                    cost = batch_cost(body, g.settings.max_batch)
                except EventStreamError as exc:
                    body_error = exc
                else:
                    receive = _replay(body, receive)
            client = scope.get("client")
            caller, headers = await g.authorize(need, token, cost, client[0] if client else "", what)
            if body_error is not None:
                raise body_error
        except Exception as exc:
            if isinstance(exc, _Denied) and need == "admin":
                _audit(exc.caller, what, "denied", 403)
            elif isinstance(exc, Forbidden) and need == "admin" and token is None:
                _audit(ANONYMOUS, what, "denied", 403)  # e.g. anonymous key management
            await problems.response_for(exc)(scope, receive, send)
            return
        scope[PRINCIPAL] = caller
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if headers:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if need == "admin" and method not in ("GET", "HEAD"):
                _audit(caller, what, "ok" if status < 400 else "failed", status)


def _audit(caller: Principal, what: str, outcome: str, status: int) -> None:
    key_id, name = caller.label
    method, _, path = what.partition(" ")
    trail.record(
        "http." + method.lower(), target=path, outcome=outcome, key_id=key_id, key_name=name, status=status
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the endpoint the body already read, then the real stream."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
