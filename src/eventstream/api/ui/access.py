"""Who is looking at the dashboard, and may they do this: the same keys and scopes as
the API, carried by a session cookie instead of a header.

Every visitor has a session cookie (``eventstream_session``: 32 random bytes,
HttpOnly, SameSite=Strict, Secure under HTTPS, path ``/ui``). Signing in with an API
key records the session in Redis under the SHA-256 of the cookie (keys.py
``ui:session``): the key's id and its token's digest, never the token, expiring with
the session. Each request then checks the key's record exactly as an API request
does (``Guard.authorize_digest``: one round trip, the key's rate limit charged), so a
revoked key ends its sessions on their next request. Without keys, on loopback, the
dashboard is open as the API is: the cookie then only anchors the CSRF token.

Reading needs ``read`` (or ``admin``), acting needs ``admin``. Every form that
changes something carries the CSRF token, an HMAC of the cookie: a page of another
site can neither read it nor send the cookie (SameSite=Strict), and the anonymous
checks (Origin, Host) apply to the dashboard as to the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from eventstream.api.deps import read_body
from eventstream.auth.guard import Guard, Principal
from eventstream.errors import Forbidden, Unauthorized, ValidationError

if TYPE_CHECKING:
    from eventstream.broker import Broker

COOKIE = "eventstream_session"
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 5000
BAD_CSRF = "the form's CSRF token is missing or wrong: reload the page and try again"


class SignIn(Exception):
    """The visitor must sign in first; ``reason`` says why when there is one to say."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "sign in")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Visit:
    """One request's visitor: who (``caller``), their cookie, and the CSRF token."""

    caller: Principal
    cookie: str
    new_cookie: bool  # the response must set it
    signed_in: bool  # a key's session (False: anonymous use)

    @property
    def csrf(self) -> str:
        return csrf_token(self.cookie)

    @property
    def can_act(self) -> bool:
        return self.caller.scope == "admin"


def csrf_token(cookie: str) -> str:
    return hmac.new(cookie.encode(), b"eventstream dashboard form", hashlib.sha256).hexdigest()


def cookie_digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_cookie() -> str:
    return secrets.token_urlsafe(32)


def presented_cookie(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value is not None and _COOKIE_RE.fullmatch(value) else None


def guard_of(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


def broker_of(request: Request) -> Broker:
    broker: Broker = request.app.state.services.broker
    return broker


async def visit(request: Request, need: str) -> Visit:
    """The visitor, allowed to do what needs ``need``; SignIn when a key is needed,
    Forbidden (403) for a key without the scope, and the guard's other refusals."""
    guard = guard_of(request)
    what = f"{request.method} {request.url.path}"
    cookie = presented_cookie(request)
    if cookie is not None:
        record = await broker_of(request).session(cookie_digest(cookie))
        if record.get("k") and record.get("d"):
            try:
                caller, _ = await guard.authorize_digest(need, record["k"], record["d"], 1, what)
            except Unauthorized as exc:  # revoked (or a record that no longer matches)
                await broker_of(request).close_session(cookie_digest(cookie))
                raise SignIn(exc.detail) from None
            return Visit(caller, cookie, False, True)
    host = request.headers.get("host", "")
    try:
        await guard.screen_anonymous(request.url.path, host, request.headers.get("origin"))
        client = request.client.host if request.client else ""
        caller, _ = await guard.authorize(need, None, 1, client, what)
    except Unauthorized:
        raise SignIn() from None
    return Visit(caller, cookie or new_cookie(), cookie is None, False)


async def read_form(request: Request) -> dict[str, list[str]]:
    """A posted form (application/x-www-form-urlencoded), bounded in size and fields.
    Any other body is not one of the dashboard's forms: no fields, so no CSRF token."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded" or request.headers.get("content-length") == "0":
        return {}
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        text = body.decode()
        return parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"the form cannot be read: {exc}") from None


def check_csrf(form: dict[str, list[str]], cookie: str | None) -> None:
    """Forbidden unless the form carries the CSRF token of the visitor's cookie."""
    sent = (form.get("csrf") or [""])[0]
    if cookie is None or not hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()):
        raise Forbidden(BAD_CSRF)


def set_cookie(request: Request, response: Response, cookie: str, max_age: int | None) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=max_age,
        path=ui_root(request),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=ui_root(request), httponly=True, samesite="strict", secure=_secure(request)
    )


def _secure(request: Request) -> bool:
    """Secure when the request came over HTTPS, or when the settings say so (a proxy in
    front terminates TLS: this process sees plain HTTP)."""
    chosen = guard_of(request).settings.ui_cookie_secure
    return request.url.scheme == "https" if chosen is None else chosen


def ui_root(request: Request) -> str:
    """The dashboard's path as the browser sees it (under a proxy's sub-path too)."""
    return f"{request.scope.get('root_path', '')}/ui"
