"""The guard at the door: one ASGI middleware that authenticates, authorizes and
rate-limits every HTTP request, asking eventstream.auth.guard for each decision.

The ingest fast path (eventstream.api.fastpath), which answers ``POST /events`` and
``/events/batch`` ahead of the middleware, calls the same ``admit``. For each request
that is not open (eventstream.auth.policy) it

1. reads the credentials: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
   (another Authorization scheme is a 401);
2. refuses what needs no body: a malformed token, or a request without one that
   cannot be anonymous (the Host and Origin checks);
3. for a metered batch, reads the body (bounded by EVENTSTREAM_MAX_BODY_BYTES) and
   counts its events, since a batch costs its number of events; the endpoint then
   gets the same buffered body;
4. authorizes the caller and charges its rate limit (one round trip), and hands the
   endpoint the caller in the scope (``principal_of``), adding the RateLimit-* fields
   to the response.

A refused request (401/403/413/429) reaches no endpoint: nothing is enqueued; it
gets the same problem+json answer as any error. Administrative requests that change
something, and refused ones, are recorded in the audit trail (eventstream.auth.trail).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstream.api import problems
from eventstream.api.asgi import header, replay, route_path
from eventstream.api.deps import read_body
from eventstream.auth import trail
from eventstream.auth.guard import ANONYMOUS, Denied, Guard, Principal
from eventstream.auth.policy import INGEST, INGEST_BATCH, required_scope
from eventstream.errors import EventStreamError, Forbidden, Unauthorized

PRINCIPAL = "eventstream.principal"  # the scope entry endpoints read the caller from
BAD_SCHEME = "the Authorization header must be `Bearer <key>` (or send the key in X-API-Key)"


def principal_of(request: Request) -> Principal:
    """The caller the middleware let in (anonymous where the route is open)."""
    p: Principal = request.scope.get(PRINCIPAL, ANONYMOUS)
    return p


def credentials(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token a request presents, or None; Unauthorized for an Authorization header
    that is not Bearer (which wins over X-API-Key)."""
    auth = api_key = None
    for name, value in headers:
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    if auth is not None:
        kind, _, token = auth.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized(BAD_SCHEME, invalid_token=True)
        return token.strip()
    if api_key is not None:
        return api_key.strip()
    return None


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


def field_headers(fields: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """The RateLimit-* fields ``authorize`` gave, as ASGI response headers."""
    return [(name.lower().encode(), value.encode()) for name, value in fields.items()]


async def admit(
    g: Guard, scope: Scope, receive: Receive, need: str, token: str | None
) -> tuple[Principal, dict[str, str], Receive]:
    """Steps 2 to 4 for a request that needs scope ``need`` and presents ``token``: the
    caller, the RateLimit-* fields for its answer, and the receive its endpoint reads
    the body from; raises the refusal (Unauthorized, Forbidden, RateLimited, ...)."""
    method, path = scope["method"], route_path(scope)
    if token is not None:
        g.check_token(token)
    else:
        headers = scope["headers"]
        host = header(headers, b"host")
        origin = header(headers, b"origin")
        await g.screen_anonymous(
            path,
            host.decode("latin-1") if host else "",
            None if origin is None else origin.decode("latin-1"),
        )
    cost, body_error = 1, None
    metered = token is not None or g.settings.anonymous_rate > 0
    if metered and method == "POST" and path == INGEST_BATCH:
        try:
            body = await read_body(Request(scope, receive), g.settings.max_body_bytes)
            cost = batch_cost(body, g.settings.max_batch)
        except EventStreamError as exc:
            body_error = exc
        else:
            receive = replay(body, receive)
    client = scope.get("client")
    caller, fields = await g.authorize(need, token, cost, client[0] if client else "", f"{method} {path}")
    if body_error is not None:
        raise body_error
    return caller, fields, receive


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
        method, path = scope["method"], route_path(scope)
        need = required_scope(method, path, g.settings.metrics_public)
        if need is None:
            await self.app(scope, receive, send)
            return
        what = f"{method} {path}"
        caller: Principal | None = None
        token: str | None = None
        try:
            token = credentials(scope["headers"])
            caller, fields, receive = await admit(g, scope, receive, need, token)
        except Exception as exc:
            if isinstance(exc, Denied) and need == "admin":
                _audit(exc.caller, what, "denied", 403)
            elif isinstance(exc, Forbidden) and need == "admin" and token is None:
                _audit(ANONYMOUS, what, "denied", 403)  # e.g. anonymous key management
            await problems.response_for(exc)(scope, receive, send)
            return
        scope[PRINCIPAL] = caller
        status = 500

        async def send_with_fields(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if fields:
                    message["headers"] = [*message.get("headers", []), *field_headers(fields)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_fields)
        finally:
            if need == "admin" and method not in ("GET", "HEAD"):
                _audit(caller, what, "ok" if status < 400 else "failed", status)


def _audit(caller: Principal, what: str, outcome: str, status: int) -> None:
    key_id, name = caller.label
    method, _, path = what.partition(" ")
    trail.record(
        "http." + method.lower(), target=path, outcome=outcome, key_id=key_id, key_name=name, status=status
    )


class IngestRefusals:
    """Counts the ingest requests this process answers with an error, by status, into
    ``counts`` (``eventstream_ingest_refused_total`` in /metrics). The outermost
    middleware: it sees every answer that goes through the stack, the guard's refusals
    and unexpected 500s included; the ingest fast path counts its own into ``counts``."""

    def __init__(self, app: ASGIApp, counts: dict[int, int]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) not in INGEST:
            await self.app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.counts[message["status"]] = self.counts.get(message["status"], 0) + 1
            await send(message)

        await self.app(scope, receive, watched)
