"""Keys and scopes in a real browser against REAL API and worker processes: a read key
sees the dead letters without a single action, and a POST it forges from the page is
refused; an admin's POST without the CSRF token is refused too; nothing moves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from tests.support.browser import Watched, run_async
from tests.support.processes import Api, Cluster
from tests.support.producers import create_key
from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page

FORGE = """async ([path, body]) => {
    const r = await fetch(path, {method: "POST", body: body,
        headers: {"content-type": "application/x-www-form-urlencoded"}});
    return [r.status, await r.text()];
}"""


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/ui/dlq")
    page.fill("input[name=key]", token)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/ui/dlq")


def test_a_read_key_sees_no_action_and_forged_posts_are_refused(
    tab: Watched, live: Api, cluster: Cluster, client: httpx.Client, browser: Any
) -> None:
    admin = run_async(create_key(cluster.redis_url, cluster.prefix, "admin", None, None))
    reader = run_async(create_key(cluster.redis_url, cluster.prefix, "read", None, None))
    as_admin = {"Authorization": f"Bearer {admin}"}
    worker = cluster.start_worker()
    r = client.post("/events", json={"type": "PERM", "payload": {}}, headers=as_admin)
    assert r.status_code == 202, r.text
    dead = r.json()["eventId"]

    def is_dead() -> bool:
        return client.get(f"/events/{dead}", headers=as_admin).json()["status"] == "dead"

    wait_for(is_dead, "the PERM event to be dead", timeout=20)
    cluster.stop(worker)

    page = tab.page
    sign_in(page, live.url, reader)
    assert page.locator(f'tr[data-id="{dead}"]').count() == 1, "a read key sees the dead letter"
    assert page.locator("table.dlq button").count() == 0, "and no action"
    assert page.locator('input[type="checkbox"][name="id"]').count() == 0
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    status, text = page.evaluate(FORGE, ["/ui/dlq/replay-one", f"csrf={token}&one={dead}"])
    assert status == 403, text
    assert "scope" in text
    assert is_dead()

    context = browser.new_context()
    try:
        other = context.new_page()
        sign_in(other, live.url, admin)
        assert other.locator(f'tr[data-id="{dead}"] button', has_text="Replay").count() == 1
        status, text = other.evaluate(FORGE, ["/ui/dlq/replay-one", f"one={dead}"])
        assert status == 403, text
        assert "CSRF" in text
        status, _ = other.evaluate(FORGE, ["/ui/dlq/replay-one", f"csrf={token}&one={dead}"])
        assert status == 403, "another session's token is refused"
        assert is_dead()
        own = other.locator('input[name="csrf"]').first.get_attribute("value")
        status, _ = other.evaluate(FORGE, ["/ui/dlq/replay-one", f"csrf={own}&one={dead}"])
        assert status == 200, "the same POST with the admin's own token goes through (to the page)"
        assert not is_dead()
    finally:
        context.close()
    tab.assert_clean("403")  # the refused POSTs are logged by the browser


def test_the_partitions_page_renders_with_data(tab: Watched, cluster: Cluster) -> None:
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = "3"
    api = cluster.start_api()
    with httpx.Client(base_url=api.url, timeout=30.0) as c:
        for n in range(9):
            assert c.post("/events", json={"type": "OK", "payload": {"n": n}}).status_code == 202
    page = tab.page
    page.goto(api.url + "/ui")
    page.click("text=Partitions")
    page.wait_for_url(api.url + "/ui/partitions")
    rows = page.locator("table tbody tr")
    assert rows.count() == 3
    queued = sum(int(rows.nth(i).locator("td").nth(1).inner_text().replace(",", "")) for i in range(3))
    assert queued == 9
    tab.shoot("partitions")
    tab.assert_clean()
