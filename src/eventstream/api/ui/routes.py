"""The dashboard's routes: sign-in and sign-out, its files, and ``guarded`` pages.

A page handler takes the request and the ``Visit`` (eventstream.api.ui.access) and
answers a page. ``guarded`` does the rest, the same for every page: reading needs
``read``, a POST needs ``admin`` and the form's CSRF token; a visitor who must sign in
is sent to the sign-in page (htmx requests get ``HX-Redirect``); a refusal or a
failure is shown as a page with the API's status and words. Every POST is recorded in
the audit trail with the key's name, as the API records administrative requests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from eventstream.api.guard import PRINCIPAL
from eventstream.api.ui import access
from eventstream.api.ui.access import SignIn, Visit
from eventstream.api.ui.render import asset, error_page, page
from eventstream.auth import trail
from eventstream.auth.apikeys import digest
from eventstream.auth.guard import Denied
from eventstream.errors import EventStreamError, Unauthorized

Handler = Callable[[Request, Visit], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
READ_METHODS = ("GET", "HEAD")


def guarded(handler: Handler) -> Endpoint:
    """``handler`` behind the dashboard's checks (module docstring)."""

    async def endpoint(request: Request) -> Response:
        acting = request.method not in READ_METHODS
        v: Visit | None = None
        try:
            v = await access.visit(request, "admin" if acting else "read")
            request.scope[PRINCIPAL] = v.caller  # what the audit helpers read
            if acting:
                form = await access.read_form(request)
                access.check_csrf(form, access.presented_cookie(request))
                request.state.form = form
            response = await handler(request, v)
        except SignIn as s:
            return sign_in_redirect(request, s.reason is not None)
        except Exception as exc:
            if acting:
                _audit(request, v, exc)
            response = error_page(request, v, exc)
        else:
            if acting:
                _audit(request, v, None, response.status_code)
        if v is not None and v.new_cookie:
            access.set_cookie(request, response, v.cookie, None)
        return response

    return endpoint


def _audit(request: Request, v: Visit | None, exc: Exception | None, status: int = 0) -> None:
    if isinstance(exc, Denied):
        caller = exc.caller
    elif v is not None:
        caller = v.caller
    else:
        return  # nobody known: the guard refused before a caller existed
    if exc is not None:
        outcome, status = ("denied", 403) if isinstance(exc, Denied) else ("failed", _status_of(exc))
    else:
        outcome = "ok" if status < 400 else "failed"
    key_id, name = caller.label
    trail.record(
        "ui." + request.url.path.rsplit("/", 1)[-1],
        target=request.url.path,
        outcome=outcome,
        key_id=key_id,
        key_name=name,
        status=status,
    )


def _status_of(exc: Exception) -> int:
    from eventstream.api import problems

    return problems.response_for(exc).status_code


def sign_in_redirect(request: Request, ended: bool) -> Response:
    root = access.ui_root(request)
    query = {"next": request.url.path if request.method in READ_METHODS else root}
    if ended:
        query["ended"] = "1"
    target = f"{root}/login?{urlencode(query, quote_via=quote)}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def safe_next(request: Request, wanted: str | None) -> str:
    """Where to go after signing in: a page of the dashboard, never another site."""
    root = access.ui_root(request)
    if (
        wanted
        and (wanted == root or wanted.startswith(root + "/"))
        and "//" not in wanted
        and "\\" not in wanted
        and wanted.isprintable()
        and wanted.isascii()
        and not wanted.startswith(f"{root}/log")  # login, logout
    ):
        return wanted
    return root


async def login(request: Request) -> Response:
    """GET: the sign-in form; POST: check the key, open a session, go on."""
    guard = access.guard_of(request)
    presented = access.presented_cookie(request)
    cookie = presented or access.new_cookie()
    context: dict[str, object] = {
        "csrf": access.csrf_token(cookie),
        "next": safe_next(request, request.query_params.get("next")),
        "ended": request.query_params.get("ended") == "1",
        "error": None,
    }
    status = 200
    try:
        context["open"] = guard.anonymous_allowed and not await guard.keys_exist()
        if request.method == "POST":
            form = await access.read_form(request)
            access.check_csrf(form, presented)
            context["next"] = safe_next(request, (form.get("next") or [""])[0])
            signed_in = await _sign_in(request, (form.get("key") or [""])[0].strip(), str(context["next"]))
            if signed_in is not None:
                return signed_in
            status = 401
            context["error"] = "That key is not valid, or it was revoked."
    except _Refused as refused:
        status, context["error"] = refused.status, refused.message
    except EventStreamError as exc:
        response = error_page(request, None, exc)
        if presented is None:
            access.set_cookie(request, response, cookie, None)
        return response
    response = page(request, None, "login.html", status=status, **context)
    if presented is None:
        access.set_cookie(request, response, cookie, None)
    return response


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _sign_in(request: Request, token: str, next_page: str) -> Response | None:
    """A response that opens the session, or None for a key that is not valid."""
    guard = access.guard_of(request)
    client = request.client.host if request.client else ""
    try:
        guard.check_token(token)
        caller, _ = await guard.authorize("read", token, 1, client, "POST /ui/login")
    except Denied as exc:
        trail.record("ui.sign_in", target="/ui", outcome="denied", key_id=exc.caller.key_id or "",
                     key_name=exc.caller.name, status=403)  # fmt: skip
        raise _Refused(
            403,
            f"Key {exc.caller.key_id} ({exc.caller.name}) has scope {exc.caller.scope}: "
            "the dashboard needs a key with scope read (to look) or admin (to act).",
        ) from None
    except Unauthorized:
        return None
    assert caller.key_id is not None
    cookie = access.new_cookie()  # a new one at each sign-in: a planted cookie gains nothing
    ttl = guard.settings.ui_session_ttl
    broker = access.broker_of(request)
    await broker.open_session(
        access.cookie_digest(cookie),
        {"k": caller.key_id, "d": digest(token), "c": time.time_ns() // 1_000_000},
        ttl,
    )
    old = access.presented_cookie(request)
    if old is not None:
        await broker.close_session(access.cookie_digest(old))
    trail.record(
        "ui.sign_in", target="/ui", outcome="ok", key_id=caller.key_id, key_name=caller.name, status=303
    )
    response = RedirectResponse(next_page, status_code=303)
    access.set_cookie(request, response, cookie, ttl)
    return response


async def logout(request: Request) -> Response:
    """End the session (POST with the CSRF token): its record is deleted at once."""
    cookie = access.presented_cookie(request)
    try:
        form = await access.read_form(request)
        access.check_csrf(form, cookie)
    except EventStreamError as exc:
        return error_page(request, None, exc)
    if cookie is not None:
        await access.broker_of(request).close_session(access.cookie_digest(cookie))
    response = RedirectResponse(f"{access.ui_root(request)}/login", status_code=303)
    access.clear_cookie(request, response)
    return response


async def static(request: Request) -> Response:
    return asset(request.path_params["name"])


def install(app: FastAPI, pages: dict[str, tuple[Handler, list[str]]]) -> None:
    """Add the dashboard's routes to ``app``: sign-in, sign-out, files, and ``pages``
    (path under /ui -> handler and methods), each behind ``guarded``."""
    app.add_route("/ui/login", login, methods=["GET", "POST"], include_in_schema=False)
    app.add_route("/ui/logout", logout, methods=["POST"], include_in_schema=False)
    app.add_route("/ui/static/{name}", static, methods=["GET"], include_in_schema=False)
    for path, (handler, methods) in pages.items():
        app.add_route("/ui" + path, guarded(handler), methods=methods, include_in_schema=False)
