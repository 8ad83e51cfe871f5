"""The guard's decisions: who is calling, and may they do this now.

It works on plain values (the token, the route, the Host and Origin, the client
address); reading them from a request, and answering, is the API's middleware
(eventstream.api.guard).

Policy, default deny (eventstream.auth.policy): a route is open, needs ``ingest``,
``read`` or ``admin``; anything not classified needs ``admin``, so a route added
later is closed until someone decides otherwise.

Checking a key is ONE round trip: the script ``authorize.lua`` reads the key's
record, compares the SHA-256 digest of the presented token with the stored one,
checks revocation and scope, and only then charges the key's rate limit
(eventstream.auth.limits), all atomically. The digest must be compared inside the
script, since it alone can decide before charging without a second round trip; a
plain comparison of digests is safe there, because timing can only tell how many
leading bytes of two SHA-256 digests agree, and nobody can choose a token whose digest
has a wanted prefix. Python then confirms the digest the script returns with
``hmac.compare_digest``. An unknown id and a wrong secret take the same path (the
script compares against an empty digest; Python compares against a dummy one) and
give the same 401. A malformed token is refused without a round trip: its shape is
public.

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
drive the API through the browser, when its ``Origin`` is neither allowed by
EVENTSTREAM_CORS_ORIGINS nor the API's own loopback origin, or (on loopback) when
its ``Host`` is not a loopback name or address: a DNS-rebinding page reaches
127.0.0.1 under its own host name.

``check_token`` and ``screen_anonymous`` refuse what can be refused before a body is
read; ``authorize`` comes after, since it charges what the request costs (a batch:
its number of events).
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

from eventstream.auth import limits
from eventstream.auth.apikeys import KeyRegistry, digest, parse_token
from eventstream.auth.policy import manages_keys
from eventstream.broker import Broker
from eventstream.errors import (
    Forbidden,
    RedisUnavailable,
    Unauthorized,
    Unavailable,
)
from eventstream.settings import Settings

NO_KEYS_TTL_S = 1.0
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


class Guard:
    """The decisions, given settings, the listen mode and, once started, Redis."""

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

    def check_token(self, token: str) -> None:
        """Refuse a malformed token (401) without a round trip."""
        if parse_token(token) is None:
            hmac.compare_digest(digest(token), _DUMMY)
            raise Unauthorized(INVALID, invalid_token=True)

    async def screen_anonymous(self, route: str, host: str, origin: str | None) -> None:
        """Refuse a request without credentials that cannot be anonymous: no key where
        one is needed (401), and the anonymous checks (403; module docstring).
        ``host``: the Host header ("" when absent); ``origin``: the Origin header."""
        if not self.anonymous_allowed or await self.keys_exist():
            raise Unauthorized(NEED_KEY)
        if manages_keys(route):
            raise Forbidden(KEYS_NEED_ADMIN_KEY)
        if self.loopback and host and not is_loopback_host(host):
            raise Forbidden(
                f"anonymous requests must name a loopback host (localhost, 127.0.0.1 or [::1]), "
                f"not {host[:100]!r}; send an API key to call this API under another name"
            )
        if origin is not None and not (
            self._origin_allowed(origin) or (is_loopback_host(host) and origin in _own_origins(host))
        ):
            raise Forbidden(
                f"anonymous requests from the web page origin {origin[:100]!r} are refused: allow it "
                "with EVENTSTREAM_CORS_ORIGINS, or send an API key"
            )

    def _origin_allowed(self, origin: str) -> bool:
        allowed = {o.strip() for o in self.settings.cors_origins.split(",") if o.strip()}
        return "*" in allowed or origin in allowed

    async def authorize(
        self, need: str, token: str | None, cost: int, client: str, what: str
    ) -> tuple[Principal, dict[str, str]]:
        """The caller and the RateLimit-* fields for its response; raises 401/403/413/429.
        ``need``: the scope the request needs; ``cost``: events it counts as; ``client``:
        its address (the anonymous bucket); ``what``: the request, for the messages. Call
        ``check_token`` or ``screen_anonymous`` first: they refuse what needs no round trip."""
        if token is None:
            if not self.anonymous_allowed or await self.keys_exist():
                raise Unauthorized(NEED_KEY)
            rate = self.settings.anonymous_rate
            if rate <= 0:
                return ANONYMOUS, {}
            burst = self.settings.anonymous_burst or math.ceil(rate)
            assert self.broker is not None
            reply = await self.broker.authorize_address(client, cost, rate, burst)
            return ANONYMOUS, limits.outcome(reply, cost, "this client address")
        presented = digest(token)
        key_id = parse_token(token)
        if key_id is None:  # check_token refused it already; kept so authorize stands alone
            hmac.compare_digest(presented, _DUMMY)
            raise Unauthorized(INVALID, invalid_token=True)
        return await self.authorize_digest(need, key_id, presented, cost, what)

    async def authorize_digest(
        self, need: str, key_id: str, presented: str, cost: int, what: str
    ) -> tuple[Principal, dict[str, str]]:
        """``authorize`` for a key known by its id and its token's digest: a dashboard
        session keeps those, never the token. The key's record is read as for every
        request, so a revoked key is refused on its next use."""
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
            raise Denied(
                caller,
                f"API key {key_id} has scope {scope!r}; {what} needs "
                + ("'admin'" if need == "admin" else f"{need!r} (or 'admin')"),
            )
        return caller, limits.outcome(reply, cost, f"API key {key_id}")


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


def _own_origins(host: str) -> tuple[str, str]:
    """The origins of pages this API serves itself (/docs) under ``host``."""
    return (f"http://{host}", f"https://{host}")


class Denied(Forbidden):
    """403 for a known key outside its scope; ``caller`` names the key (for the audit trail)."""

    def __init__(self, caller: Principal, detail: str) -> None:
        super().__init__(detail)
        self.caller = caller
