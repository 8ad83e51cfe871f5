"""Who may see and use the dashboard: the API's keys and scopes, a session cookie that
never holds the key, CSRF tokens on every form, and its own strict CSP. In-process app,
real Redis."""

from __future__ import annotations

import httpx
import pytest

from eventstream.api.ui.access import COOKIE, cookie_digest
from eventstream.auth.apikeys import KeyRegistry
from eventstream.settings import Settings
from tests.support.asgi import Api
from tests.support.auth import create_key, running
from tests.support.ui import csrf_of, post_form, sign_in


def session_cookie(r: httpx.Response) -> str:
    [line] = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE + "=")]
    return line


async def test_without_keys_on_loopback_the_dashboard_is_open_with_a_strict_csp(api: Api) -> None:
    r = await api.client.get("/ui")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    assert "open (no keys)" in r.text
    cookie = session_cookie(r)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP


async def test_the_home_page_leads_to_the_dashboard(api: Api) -> None:
    r = await api.client.get("/")
    assert r.status_code in (302, 307), r.text
    assert r.headers["location"] == "/ui"


async def test_its_files_come_from_the_package_and_nothing_else_is_served(api: Api) -> None:
    for name, kind in [
        ("htmx.min.js", "text/javascript"),
        ("ui.css", "text/css"),
        ("ui.js", "text/javascript"),
    ]:
        r = await api.client.get(f"/ui/static/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(kind)
        assert "max-age" in r.headers["cache-control"]
        assert len(r.content) > 100
    for name in ["nope.js", "..%2Faccess.py", "%2e%2e%2f__init__.py", "base.html"]:
        r = await api.client.get(f"/ui/static/{name}")
        assert r.status_code == 404, name
    page = (await api.client.get("/ui")).text
    assert "http://" not in page.replace("http://127.0.0.1", "")  # no CDN, no other site
    assert "https://" not in page


async def test_with_keys_a_visitor_is_sent_to_sign_in(settings: Settings) -> None:
    async with running(settings, loopback=True) as a:
        await create_key(a, "read")
        r = await a.client.get("/ui")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=%2Fui"
        r = await a.client.get("/ui", headers={"HX-Request": "true"})
        assert r.status_code == 401
        assert r.headers["hx-redirect"].startswith("/ui/login")
        r = await a.client.get("/ui/login")
        assert r.status_code == 200
        assert 'name="key"' in r.text
        assert "open (no keys)" not in r.text


@pytest.mark.parametrize("scope", ["read", "admin"])
async def test_a_read_or_admin_key_signs_in_once_and_the_cookie_never_holds_it(
    settings: Settings, scope: str
) -> None:
    async with running(settings) as a:
        token = await create_key(a, scope, name=f"ops-{scope}")
        r = await sign_in(a.client, token, "/ui")
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/ui"
        cookie = session_cookie(r)
        assert token not in cookie
        assert f"Max-Age={settings.ui_session_ttl}" in cookie
        assert "HttpOnly" in cookie
        page = await a.client.get("/ui")
        assert page.status_code == 200, page.text
        assert f"ops-{scope} · {scope}" in page.text
        sid = a.client.cookies[COOKIE]
        record = await a.broker.session(cookie_digest(sid))
        assert record["k"] == token.split("_")[1]
        assert token not in str(record)
        ttl = await a.broker._r.ttl(a.broker.keys.ui_session(cookie_digest(sid)))
        assert 0 < ttl <= settings.ui_session_ttl


async def test_wrong_ingest_and_revoked_keys_do_not_sign_in(settings: Settings) -> None:
    async with running(settings) as a:
        ingest = await create_key(a, "ingest", name="producer")
        r = await sign_in(a.client, ingest)
        assert r.status_code == 403
        assert "scope ingest" in r.text
        r = await sign_in(a.client, "es_000000000000_" + "A" * 43)
        assert r.status_code == 401
        assert "not valid" in r.text
        r = await sign_in(a.client, "<script>alert(1)</script>")
        assert r.status_code == 401
        assert "<script>alert" not in r.text
        registry = KeyRegistry(a.broker)
        key, token = await registry.create("gone", "read")
        await registry.revoke(key.id)
        assert (await sign_in(a.client, token)).status_code == 401
        assert (await a.client.get("/ui")).status_code == 303


async def test_revoking_the_key_ends_its_sessions_at_once(settings: Settings) -> None:
    async with running(settings) as a:
        registry = KeyRegistry(a.broker)
        key, token = await registry.create("on-call", "admin")
        assert (await sign_in(a.client, token)).status_code == 303
        assert (await a.client.get("/ui")).status_code == 200
        sid = a.client.cookies[COOKIE]
        await registry.revoke(key.id)
        r = await a.client.get("/ui")
        assert r.status_code == 303
        assert "ended=1" in r.headers["location"]
        assert await a.broker.session(cookie_digest(sid)) == {}
        assert "session ended" in (await a.client.get(r.headers["location"])).text


async def test_signing_out_deletes_the_session(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "read")
        await sign_in(a.client, token)
        sid = a.client.cookies[COOKIE]
        r = await post_form(a.client, "/ui/logout", "/ui")
        assert r.status_code == 303
        assert await a.broker.session(cookie_digest(sid)) == {}
        assert (await a.client.get("/ui")).status_code == 303
        # the old cookie, replayed by someone who kept it, opens nothing
        a.client.cookies.set(COOKIE, sid, domain="127.0.0.1", path="/ui")
        assert (await a.client.get("/ui")).status_code == 303


async def test_forms_without_the_csrf_token_are_refused(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "admin")
        form = await a.client.get("/ui/login")
        good = csrf_of(form.text)
        for bad in ["", "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1")]:
            r = await a.client.post("/ui/login", data={"key": token, "csrf": bad})
            assert r.status_code == 403, bad
            assert "CSRF" in r.text
        assert (await sign_in(a.client, token)).status_code == 303
        r = await a.client.post("/ui/logout", data={})
        assert r.status_code == 403
        r = await a.client.post(
            "/ui/logout", content=b'{"csrf": "x"}', headers={"content-type": "application/json"}
        )
        assert r.status_code == 403
        assert (await a.client.get("/ui")).status_code == 200  # still signed in


async def test_after_sign_in_only_pages_of_the_dashboard_are_followed(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "read")
        for wanted in ["//evil.example/ui", "https://evil.example", "/ui\\..\\x", "/docs", "/ui/logout"]:
            a.client.cookies.clear()
            r = await sign_in(a.client, token, wanted)
            assert r.status_code == 303
            assert r.headers["location"] == "/ui", wanted
        a.client.cookies.clear()
        r = await sign_in(a.client, token, "/ui/workers")
        assert r.headers["location"] == "/ui/workers"


async def test_under_https_the_cookie_is_secure(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "read")
        transport = httpx.ASGITransport(app=a.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as tls:
            r = await sign_in(tls, token)
            assert r.status_code == 303
            assert "Secure" in session_cookie(r)


async def test_a_cookie_of_the_wrong_shape_is_a_new_visitor(api: Api) -> None:
    for junk in ["x", "a" * 500, "../../etc", "%C3%A9" * 8, "a" * 42 + "!"]:
        api.client.cookies.clear()
        api.client.cookies.set(COOKIE, junk, domain="127.0.0.1", path="/ui")
        r = await api.client.get("/ui")
        assert r.status_code == 200, junk
        assert COOKIE in r.headers.get("set-cookie", "")


async def test_under_a_proxy_sub_path_every_link_and_the_cookie_carry_it(settings: Settings) -> None:
    async with running(settings.model_copy(update={"root_path": "/es"})) as a:
        token = await create_key(a, "read")
        # what uvicorn hands the app with --root-path /es once the proxy stripped /es
        transport = httpx.ASGITransport(app=a.app, root_path="/es")
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.get("/es/ui")
            assert r.status_code == 303
            assert r.headers["location"] == "/es/ui/login?next=%2Fes%2Fui"
            form = await c.get("/es/ui/login", params={"next": "/es/ui"})
            assert 'action="/es/ui/login"' in form.text
            assert 'src="/es/ui/static/htmx.min.js' in form.text
            assert "Path=/es/ui" in session_cookie(form)
            r = await c.post(
                "/es/ui/login", data={"key": token, "csrf": csrf_of(form.text), "next": "/es/ui"}
            )
            assert r.status_code == 303
            assert r.headers["location"] == "/es/ui"
            page = await c.get("/es/ui")
            assert page.status_code == 200
            assert 'href="/es/docs"' in page.text
            assert 'href="/ui' not in page.text
            assert (await c.get("/es/ui/static/ui.css")).status_code == 200


async def test_the_cookie_is_secure_when_the_settings_say_so(settings: Settings) -> None:
    async with running(settings.model_copy(update={"ui_cookie_secure": True})) as a:
        token = await create_key(a, "read")
        r = await sign_in(a.client, token)
        assert "Secure" in session_cookie(r)
