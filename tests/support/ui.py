"""The dashboard driven over HTTP as a browser would: read a page's CSRF token, sign in
with a key, post a form. Used by the in-process tests (tests/ui) and the browser tests."""

from __future__ import annotations

import re
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    m = _CSRF.search(html)
    assert m, "the page has no form with a CSRF token"
    return m.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_page: str = "/ui") -> httpx.Response:
    """Open the sign-in page (it sets the cookie), then post the key with its token."""
    form = await client.get("/ui/login", params={"next": next_page})
    assert form.status_code == 200, form.text
    return await client.post("/ui/login", data={"key": token, "csrf": csrf_of(form.text), "next": next_page})


async def post_form(client: httpx.AsyncClient, path: str, page: str, **fields: Any) -> httpx.Response:
    """Post a form of the dashboard with the CSRF token of ``page`` (a path it was on)."""
    shown = await client.get(page)
    assert shown.status_code == 200, shown.text
    return await client.post(path, data={"csrf": csrf_of(shown.text), **fields})
