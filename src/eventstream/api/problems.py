"""RFC 9457 problem+json: every error response is made here, in one place."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from eventstream.errors import (
    BackendUnavailable,
    Forbidden,
    NotFound,
    RateLimited,
    RedisTimeout,
    Unauthorized,
    Unavailable,
    ValidationError,
)

log = structlog.get_logger("eventstream.api")

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
            "detail": detail, **extra}  # fmt: skip
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def response_for(exc: Exception) -> Response:
    """The problem+json answer for an exception: the one mapping every route uses."""
    if isinstance(exc, ValidationError):
        return problem(exc.status, exc.detail, errors=exc.errors)
    if isinstance(exc, RequestValidationError):
        errors = [
            {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
        return problem(422, detail, errors=errors)
    if isinstance(exc, NotFound):
        return problem(404, str(exc))
    if isinstance(exc, Unauthorized):
        challenge = 'Bearer realm="eventstream"' + (', error="invalid_token"' if exc.invalid_token else "")
        return problem(401, exc.detail, headers={"WWW-Authenticate": challenge})
    if isinstance(exc, Forbidden):
        return problem(403, exc.detail)
    if isinstance(exc, RateLimited):
        return problem(429, exc.detail, headers={"Retry-After": str(exc.retry_after_s), **exc.headers})
    if isinstance(exc, HTTPException):
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    if isinstance(exc, Unavailable):
        if isinstance(exc, RedisTimeout):
            # The command may have reached Redis and be applied once it answers again.
            log.warning("redis did not answer in time", error=str(exc))
        elif isinstance(exc, BackendUnavailable):
            log.warning("backing service unavailable", error=str(exc))
        return problem(503, exc.detail, headers={"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, ClientDisconnect):
        # The client went away mid-request: not a server error, and nobody reads the answer.
        log.debug("client disconnected before the request was read")
        return problem(400, "the client disconnected before the request was complete")
    log.exception("unexpected error", error=f"{type(exc).__name__}", exc_info=exc)
    return problem(500, "unexpected server error; it has been logged")


def install(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> Response:
        return response_for(exc)

    for cls in (ValidationError, RequestValidationError, NotFound, HTTPException, Unavailable,
                Unauthorized, Forbidden, RateLimited, Exception):  # fmt: skip
        app.add_exception_handler(cls, handle)
    app.add_exception_handler(ClientDisconnect, handle)  # a known case, answered like the others
