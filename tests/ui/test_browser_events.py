"""The Events pages in a real browser against REAL API and worker processes: the list
with data, the header's search box landing on an event, and hostile data shown as text
with no script run (no dialog, nothing the CSP had to block)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.browser import Watched
from tests.support.processes import Api, Cluster
from tests.support.waiting import wait_for

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


def post(client: httpx.Client, type_: str, payload: dict[str, Any], **extra: Any) -> str:
    headers = extra.pop("headers", None)
    r = client.post("/events", json={"type": type_, "payload": payload, **extra}, headers=headers)
    assert r.status_code == 202, r.text
    event_id: str = r.json()["eventId"]
    return event_id


def settled(client: httpx.Client, ids: list[str]) -> None:
    """Wait until no event of ``ids`` is queued, in flight or waiting for a retry."""

    def done() -> bool:
        return all(client.get(f"/events/{i}").json()["status"] in ("processed", "dead") for i in ids)

    wait_for(done, "the worker to settle the events", timeout=30)


def test_the_events_page_lists_events_and_the_search_box_finds_one(
    tab: Watched, live: Api, client: httpx.Client, cluster: Cluster
) -> None:
    cluster.start_worker()
    ok = [
        post(client, "OK", {"order": 1000 + n, "amount": 25 + n}, orderingKey=f"order-{n % 3}")
        for n in range(8)
    ]
    failed = post(client, "FAIL", {"order": 77, "card": "4242"}, source="checkout", severity="error")
    settled(client, [*ok, failed])
    page = tab.page
    page.goto(live.url + "/ui/events")
    rows = page.locator("#events tbody tr")
    assert rows.count() == len(ok)
    assert rows.first.locator("td").first.inner_text() == ok[-1]  # newest first
    assert page.locator("#events .badge.processed").count() == len(ok)
    tab.shoot("events")
    page.select_option("#status", "dead")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/events?status=dead*")
    assert page.locator("#events tbody tr").count() == 1
    assert "this handler always fails" in page.locator("#events").inner_text()

    page.fill("header .find input[name=id]", f"  {failed} ")
    page.press("header .find input[name=id]", "Enter")
    page.wait_for_url(f"{live.url}/ui/events/{failed}")
    assert page.locator("#status").inner_text() == "dead"
    assert '"card": "4242"' in page.locator("#payload").inner_text()
    assert "RuntimeError: this handler always fails" in page.locator("#traceback").inner_text()
    assert "checkout" in page.locator("#facts").inner_text()
    tab.shoot("event")

    page.fill("header .find input[name=id]", "no-such-event")
    page.press("header .find input[name=id]", "Enter")
    page.wait_for_load_state()
    assert "No event with id 'no-such-event'" in page.locator("[role=alert]").inner_text()
    tab.assert_clean("404")  # the browser logs the not-found answer


def test_hostile_data_shows_as_text_and_runs_nothing(
    tab: Watched, live: Api, client: httpx.Client, cluster: Cluster
) -> None:
    cluster.start_worker()
    payload = {h: h for h in HOSTILE} | {"reason": " ".join(HOSTILE)}
    event_id = post(
        client,
        "REFUSE",
        payload,
        orderingKey=HOSTILE[1],
        source=HOSTILE[0],
        headers={"Idempotency-Key": HOSTILE[0]},
    )
    settled(client, [event_id])
    page = tab.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live.url}/ui/events/{event_id}")
    shown = page.locator("#payload").inner_text()
    for bad in HOSTILE:
        assert bad in shown or bad.replace('"', '\\"') in shown
        assert bad in page.locator("#reason").inner_text()
        assert bad in page.locator("#facts").inner_text()
    page.goto(f"{live.url}/ui/events?status=dead")
    assert HOSTILE[1] in page.locator("#events").inner_text()  # its ordering key, as text
    page.goto(f"{live.url}/ui/events/find?id={HOSTILE[0]}")
    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0
    assert dialogs == []
    tab.assert_clean("404")
