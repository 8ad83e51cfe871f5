"""The ingest hot path: POST /events and /events/batch answered in one step, ahead of
the middleware stack.

The two routes stay declared on the FastAPI app (the OpenAPI document describes them,
and the same endpoint functions run). ``EventStreamAPI`` (eventstream.api.app) hands
their requests here instead of to the stack of ASGI layers every other request goes
through (FastAPI's error, telemetry and body-limit middleware, ours, the router),
which together cost more than the ingest itself. What those layers do for these two
routes is done here, in the same order:

1. the guard (eventstream.api.guard.admit): credentials, the batch body, the
   authorization and the rate limit; a refusal reaches no endpoint;
2. no query parameters (422 for any);
3. the endpoint; any error becomes its problem+json answer (eventstream.api.problems);
4. the answer gets the security headers (eventstream.api.security.headers_for) and
   the caller's RateLimit-* fields;
5. an error answer is counted in ``eventstream_ingest_refused_total``.

Two cases take the whole stack instead. With CORS on (EVENTSTREAM_CORS_ORIGINS), a
request that carries an Origin header, so that the CORS middleware answers it. And
while OpenTelemetry is set up in the process (``telemetry_configured``: checked at
most once a second), every ingest request, so that what records each request there
(FastAPI's own server spans and metrics, an instrumentation's middleware) records
these too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from eventstream.api import events, problems, query, security
from eventstream.api.asgi import header, route_path
from eventstream.api.guard import PRINCIPAL, admit, credentials, field_headers
from eventstream.auth.guard import Guard
from eventstream.auth.policy import INGEST_SCOPE

NO_PARAMETERS: frozenset[str] = frozenset()  # the ingest routes take none

Endpoint = Callable[[Request], Awaitable[Response]]

# OpenTelemetry's defaults until a provider is set: they record nothing
DEFERRED_PROVIDERS = frozenset(
    {
        ("opentelemetry.trace", "ProxyTracerProvider"),
        ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    }
)
RECHECK_S = 1.0


def telemetry_configured() -> bool:
    """Whether OpenTelemetry is set up in this process: a tracer or meter provider other
    than the API's deferred defaults (set by EVENTSTREAM_TRACING, the application or
    ``opentelemetry-instrument``). The logs API is still private in OpenTelemetry for
    Python: a logger provider alone is not looked at."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return False
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider())
    return any((type(p).__module__, type(p).__name__) not in DEFERRED_PROVIDERS for p in providers)


class IngestFastPath:
    """``counts``: this process's refused ingest requests by status (shared with
    eventstream.api.guard.IngestRefusals, which counts those that take the stack);
    ``cors``: CORS is on; ``observed``: whether requests are being recorded (checked at
    most once every RECHECK_S)."""

    def __init__(
        self,
        guard: Guard,
        counts: dict[int, int],
        cors: bool,
        observed: Callable[[], bool] = telemetry_configured,
    ) -> None:
        self.guard = guard
        self.counts = counts
        self.cors = cors
        self.observed = observed
        self._observed = False
        self._recheck_at = 0.0
        self.routes: dict[str, Endpoint] = {"/events": events.post_event, "/events/batch": events.post_batch}
        # the same for both routes; the endpoints' answers carry none of these
        self.secured = security.headers_for("/events")

    def endpoint(self, scope: Scope) -> Endpoint | None:
        """The endpoint of a request that takes the fast path; None for any other."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        endpoint = self.routes.get(route_path(scope))  # without any root_path
        if endpoint is None or (self.cors and header(scope["headers"], b"origin") is not None):
            return None
        now = time.monotonic()
        if now >= self._recheck_at:
            self._observed = self.observed()
            self._recheck_at = now + RECHECK_S
        return None if self._observed else endpoint

    async def __call__(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        fields: dict[str, str] = {}
        try:
            token = credentials(scope["headers"])
            caller, fields, receive = await admit(self.guard, scope, receive, INGEST_SCOPE, token)
            scope[PRINCIPAL] = caller
            query.check(scope.get("query_string", b""), NO_PARAMETERS)
            response = await endpoint(Request(scope, receive))
        except Exception as exc:
            response = problems.response_for(exc)
        headers = response.raw_headers
        headers.extend(self.secured)
        if fields:
            headers.extend(field_headers(fields))
        if response.status_code >= 400:
            self.counts[response.status_code] = self.counts.get(response.status_code, 0) + 1
        await response(scope, receive, send)
