"""The ingest hot path: POST /events and /events/batch served without FastAPI's routing.

The two ingest routes stay declared on the FastAPI app (so the OpenAPI document
describes them, and the same functions run); this middleware calls them directly,
skipping route matching, dependency solving and the inner middleware, which cost
more than the ingest itself. Errors go through the same problem+json mapping.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from eventstream.api import events, problems, query
from eventstream.api.asgi import route_path

NO_PARAMETERS: frozenset[str] = frozenset()  # the ingest routes take none


class IngestFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = {"/events": events.post_event, "/events/batch": events.post_batch}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(route_path(scope))  # without any root_path
            if endpoint is not None:
                try:
                    query.check(scope.get("query_string", b""), NO_PARAMETERS)
                    response = await endpoint(Request(scope, receive))
                except Exception as exc:
                    response = problems.response_for(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
