"""/docs and /redoc work offline: every file they load is served by the API itself, to
anyone (as the pages are), even once API keys exist; GET / leads to the dashboard."""

from __future__ import annotations

import re

import pytest

from eventstream.auth.apikeys import KeyRegistry
from tests.support.asgi import Api

REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")
PAGES = {"/docs": "SwaggerUIBundle", "/redoc": "Redoc"}  # the page's script defines it


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("keys_exist", [False, True], ids=["no keys", "keys exist"])
@pytest.mark.parametrize("page", list(PAGES))
async def test_every_file_a_docs_page_loads_is_served_by_the_api(
    api: Api, page: str, keys_exist: bool
) -> None:
    if keys_exist:
        await KeyRegistry(api.broker).create("someone", "admin", None, None)
        assert (await api.client.get("/events")).status_code == 401, "anonymous requests are refused now"
    r = await api.client.get(page)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "cdn." not in r.text
    assert "fonts.googleapis" not in r.text
    refs = references(r.text)
    assert "/openapi.json" in refs
    scripts = [ref for ref in refs if ref.endswith(".js")]
    assert scripts, refs
    for ref in refs:
        assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
        got = await api.client.get(ref)
        assert got.status_code == 200, (ref, got.text[:200])
        assert got.content, ref
    script = b"".join([(await api.client.get(ref)).content for ref in scripts])
    assert PAGES[page].encode() in script


async def test_the_root_leads_to_the_dashboard_which_links_the_docs(api: Api) -> None:
    r = await api.client.get("/")
    assert r.status_code == 307
    assert r.headers["location"] == "/ui"
    assert 'href="/docs"' in (await api.client.get("/ui")).text
