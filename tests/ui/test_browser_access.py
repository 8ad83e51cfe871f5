"""The dashboard in a real browser (Chromium via Playwright) against a REAL API process:
it renders under its strict CSP with htmx loaded, and a key signs in and out."""

from __future__ import annotations

from tests.support.browser import Watched, run_async
from tests.support.processes import Api, Cluster
from tests.support.producers import create_key
from tests.support.subpath import sub_path_proxy
from tests.support.waiting import wait_for


def test_the_open_dashboard_renders_without_a_complaint(tab: Watched, live: Api) -> None:
    page = tab.page
    page.goto(live.url + "/")
    assert page.url == live.url + "/ui"
    assert page.locator("h1").inner_text() == "Overview"
    assert page.evaluate("typeof window.htmx") == "object", "htmx loaded from the server, under the CSP"
    assert page.locator("text=open (no keys)").is_visible()
    tab.assert_clean()


def test_a_key_signs_in_once_and_signs_out(tab: Watched, live: Api, cluster: Cluster) -> None:
    token = run_async(create_key(cluster.redis_url, cluster.prefix, "read", None, None))
    page = tab.page

    def sent_to_sign_in() -> bool:
        page.goto(live.url + "/ui")
        return "/ui/login" in page.url

    wait_for(sent_to_sign_in, "the API to notice that a key exists", timeout=10)
    page.fill("input[name=key]", "es_000000000000_" + "x" * 43)
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "That key is not valid, or it was revoked."
    page.fill("input[name=key]", token)
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/ui")
    assert page.locator(".who").inner_text().count("read-") == 1
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]
    assert page.evaluate("document.cookie") == "", "scripts cannot read the session"
    page.click("text=Sign out")
    page.wait_for_url(live.url + "/ui/login")
    page.goto(live.url + "/ui")
    assert "/ui/login" in page.url
    tab.assert_clean("401")  # the refused key's answer is logged by the browser


def test_behind_a_proxy_under_a_sub_path_it_works_as_at_the_root(tab: Watched, cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_ROOT_PATH="/eventstream")
    token = run_async(create_key(cluster.redis_url, cluster.prefix, "admin", None, None))
    page = tab.page
    with sub_path_proxy(api.url, "/eventstream") as base:
        page.goto(base + "/")
        wait_for(lambda: "/eventstream/ui/login" in page.url, "the sign-in page", timeout=10)
        page.fill("input[name=key]", token)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/ui")
        assert page.evaluate("typeof window.htmx") == "object"
        [cookie] = page.context.cookies()
        assert cookie["path"] == "/eventstream/ui"
        page.click("text=API docs")
        page.wait_for_url(base + "/docs")
    tab.assert_clean()
