"""The dead letters page in a real browser against REAL API and worker processes: the
e2e app's PERM events die, the page lists them, and its buttons send them back (checked
through the JSON API): one, the selected, and all that match after the confirmation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.support.browser import Watched
from tests.support.processes import Api, Cluster
from tests.support.waiting import wait_for


def dead_ids(client: httpx.Client) -> list[str]:
    r = client.get("/failed-events")
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def status(client: httpx.Client, event_id: str) -> Any:
    return client.get(f"/events/{event_id}").json()["status"]


def kill(client: httpx.Client, cluster: Cluster, n: int, queued: tuple[str, ...] = ()) -> list[str]:
    """Post ``n`` PERM events and let a worker process refuse them (and the ``queued``
    ones); the worker is stopped after, so that a replayed event stays queued."""
    worker = cluster.start_worker()
    ids = list(queued)
    for i in range(n):
        r = client.post("/events", json={"type": "PERM", "payload": {"n": i}})
        assert r.status_code == 202, r.text
        ids.append(r.json()["eventId"])
    wait_for(lambda: set(ids) <= set(dead_ids(client)), "the PERM events to be dead", timeout=20)
    cluster.stop(worker)
    return ids


def test_the_page_replays_one_the_selected_and_all_that_match(
    tab: Watched, live: Api, cluster: Cluster, client: httpx.Client
) -> None:
    ids = kill(client, cluster, 3)
    page = tab.page
    page.goto(live.url + "/ui/dlq")
    rows = page.locator("table.dlq tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).get_attribute("data-id") for i in range(3)] == ids[::-1]
    assert page.locator(f'tr[data-id="{ids[0]}"] .reason').inner_text() == "PermanentError: refused for good"
    tab.shoot("dlq")

    page.locator(f'tr[data-id="{ids[0]}"]').get_by_role("button", name="Replay").click()
    assert page.locator(".outcome").inner_text() == "Replayed 1."
    assert page.url == live.url + "/ui/dlq?replayed=1&missing=0"
    assert ids[0] not in dead_ids(client)
    assert status(client, ids[0]) == "queued"

    page.check("input[data-select-all]")
    assert page.locator('input[name="id"]:checked').count() == 2
    page.get_by_role("button", name="Replay selected").click()
    assert page.locator(".outcome").inner_text() == "Replayed 2."
    assert dead_ids(client) == []
    assert [status(client, i) for i in ids] == ["queued"] * 3

    kill(client, cluster, 0, tuple(ids))  # the worker refuses the replayed three again
    assert sorted(dead_ids(client)) == sorted(ids)
    page.goto(live.url + "/ui/dlq")
    page.fill("#f-q", "REFUSED")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.dlq tbody tr").count() == 3
    page.get_by_role("button", name="Replay all matching…").click()
    assert page.locator("#matched").inner_text() == "3 dead events match now."
    assert sorted(dead_ids(client)) == sorted(ids)  # the count changed nothing
    page.get_by_role("button", name="Confirm: replay 3").click()
    assert page.locator(".outcome").inner_text() == "Replayed 3."
    assert page.locator("#f-q").input_value() == "REFUSED"
    assert dead_ids(client) == []
    tab.assert_clean()


def test_a_long_count_counts_on_by_itself_before_the_confirmation(
    tab: Watched, cluster: Cluster, tmp_path: Path
) -> None:
    # The API process counts one entry per slice and one slice per request, so that
    # three dead events take several requests, as a DLQ of hundreds of thousands does.
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "sitecustomize.py").write_text(
        "import eventstream.api.ui.dlq, eventstream.replay.dead\n"
        "eventstream.api.ui.dlq.COUNT_BUDGET_S = 0.0\n"
        "eventstream.replay.dead.COUNT_CHUNK = 1\n"
    )
    api = cluster.start_api(PYTHONPATH=os.pathsep.join([str(tuned), cluster.env()["PYTHONPATH"]]))
    with httpx.Client(base_url=api.url, timeout=30.0) as client:
        ids = kill(client, cluster, 3)
        asked: list[str] = []
        tab.page.on("request", lambda r: asked.append(r.url) if "counted=" in r.url else None)
        tab.page.goto(api.url + "/ui/dlq/confirm?do=replay&q=refused")
        expect(tab.page.locator("#matched")).to_have_text("3 dead events match now.")
        assert len(asked) >= 2  # htmx asked for the next slice, request after request
        tab.page.get_by_role("button", name="Confirm: replay 3").click()
        assert tab.page.locator(".outcome").inner_text() == "Replayed 3."
        assert dead_ids(client) == []
        assert sorted(ids) == sorted(i for i in ids if status(client, i) == "queued")
        tab.assert_clean()
    cluster.stop(api.proc)
