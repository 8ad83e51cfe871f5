"""The dashboard's dead letters, in-process over real Redis: the list and its filters
(the reason filter bounded, with "continue"), each action and its counters and audit
records, who may act, and hostile text shown as text. Dead events come from a real
worker whose handler refuses them with the reason the test chose."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from structlog.testing import capture_logs

from eventstream.api.ui import dlq as ui_dlq
from eventstream.app import EventStream
from eventstream.auth.trail import LOGGER
from eventstream.errors import PermanentError
from eventstream.event import Event
from eventstream.replay import dead
from eventstream.settings import Settings
from tests.support.asgi import Api, MakeApi
from tests.support.auth import create_key, running
from tests.support.ui import csrf_of, post_form, sign_in

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def refusing_app() -> EventStream:
    """Every event fails for good, its reason the payload's ``why``."""
    app = EventStream()

    @app.handler("*")
    async def refuse(event: Event) -> None:
        raise PermanentError(str(event.payload.get("why", "refused")))

    return app


async def bury(api: Api, *events: tuple[str, str]) -> list[str]:
    """Dead-letter events of (type, reason) through a real worker; their ids, oldest first."""
    ids = [await api.accepted(t, {"why": why}) for t, why in events]
    await api.burst(refusing_app())
    return ids


def shown(page: str) -> list[str]:
    """The ids of the rows, in the page's order."""
    return re.findall(r'<tr data-id="([^"]+)"', page)


def link(page: str, text: str) -> str:
    m = re.search(r'<a href="([^"]+)"[^>]*>' + re.escape(text) + "</a>", page)
    assert m, f"no link {text!r}"
    return html.unescape(m.group(1))


async def outcome(api: Api, r: httpx.Response) -> str:
    """Follow an action's redirect to the list; the outcome it shows."""
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/ui/dlq?")
    page = await api.client.get(r.headers["location"])
    assert page.status_code == 200, page.text
    m = re.search(r'<p class="outcome" role="status">([^<]*)</p>', page.text)
    assert m, page.text
    return m.group(1)


async def test_the_list_shows_dead_events_newest_first_with_their_facts(api: Api) -> None:
    ids = await bury(api, ("A", "first\nsecond line"), ("B", "other"), ("A", "third"))
    r = await api.client.get("/ui/dlq")
    assert r.status_code == 200, r.text
    assert shown(r.text) == ids[::-1]
    assert f'href="/ui/events/{ids[0]}"' in r.text
    assert (
        '<div class="reason">PermanentError: first</div>' in r.text
    )  # the first line; the rest under details
    assert "<pre>PermanentError: first\nsecond line</pre>" in r.text
    assert r.text.count('name="id" value=') == 3  # open use on loopback may act
    assert r.text.count('formaction="/ui/dlq/replay-one"') == 3
    assert 'aria-current="page">Dead letters' in r.text
    # its forms must carry their Origin: "no-referrer" makes a browser send "Origin: null"
    assert r.headers["referrer-policy"] == "same-origin"
    assert (await api.client.get("/ui/dlq", params={"cursor": "0-0"})).status_code == 200


async def test_the_type_filter_and_the_reason_filter(api: Api) -> None:
    ids = await bury(api, ("A", "Timeout talking to x"), ("B", "timeout again"), ("A", "bad input"))
    r = await api.client.get("/ui/dlq", params={"type": "A"})
    assert shown(r.text) == [ids[2], ids[0]]
    r = await api.client.get("/ui/dlq", params={"q": "TIMEOUT"})
    assert shown(r.text) == [ids[1], ids[0]]
    r = await api.client.get("/ui/dlq", params={"type": "A", "q": "timeout"})
    assert shown(r.text) == [ids[0]]
    assert "Searched 3 dead events" in r.text
    r = await api.client.get("/ui/dlq", params={"q": "nothing like it"})
    assert shown(r.text) == []
    assert "No dead event matches here." in r.text
    for bad in [{"type": "<b>"}, {"q": "x" * 201}, {"cursor": "nope"}]:
        r = await api.client.get("/ui/dlq", params=bad)
        assert r.status_code == 422, bad


async def test_a_rare_reason_is_searched_a_bounded_slice_at_a_time(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_dlq, "SEARCH_BUDGET", 5)
    ids = await bury(api, ("A", "needle one"), ("A", "Needle two"), *[("A", f"hay {i}") for i in range(10)])
    r = await api.client.get("/ui/dlq", params={"q": "needle"})
    assert shown(r.text) == []
    assert "Searched 5 dead events" in r.text
    assert "older ones are not searched yet" in r.text
    r = await api.client.get(link(r.text, "Continue searching older"))
    assert shown(r.text) == []
    assert "Searched 5 dead events" in r.text
    r = await api.client.get(link(r.text, "Continue searching older"))
    assert shown(r.text) == [ids[1], ids[0]]
    assert "Searched 2 dead events" in r.text
    assert ": the oldest." in r.text
    assert "Continue searching older" not in r.text
    assert link(r.text, "Newest") == "/ui/dlq?q=needle"


async def test_replay_one_and_delete_one_move_the_counters(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await bury(api, ("A", "x"), ("A", "y"))
    with capture_logs() as logs:
        r = await post_form(api.client, "/ui/dlq/replay-one", "/ui/dlq", one=ids[0], type="A")
        assert r.headers["location"] == "/ui/dlq?type=A&replayed=1&missing=0"
        assert await outcome(api, r) == "Replayed 1."
        r = await post_form(api.client, "/ui/dlq/delete-one", "/ui/dlq", one=ids[1])
        assert await outcome(api, r) == "Deleted 1."
    counters = await api.counters()
    assert (counters.get("replayed", 0), counters.get("deleted", 0)) == (1, 1)
    assert (await api.client.get(f"/failed-events/{ids[0]}")).json()["eventStatus"] == "queued"
    assert shown((await api.client.get("/ui/dlq")).text) == []
    records = [(r["action"], r["target"], r["key_name"]) for r in logs if r.get("logger") == LOGGER]
    assert records == [
        ("replay.dlq", f"id={ids[0]}", "anonymous"),
        ("ui.replay-one", "/ui/dlq/replay-one", "anonymous"),
        ("dlq.delete", f"id={ids[1]}", "anonymous"),
        ("ui.delete-one", "/ui/dlq/delete-one", "anonymous"),
    ]


async def test_an_event_no_longer_in_the_dlq_is_reported_not_a_failure(api: Api) -> None:
    [gone] = await bury(api, ("A", "x"))
    assert (await api.client.delete(f"/failed-events/{gone}")).status_code == 204
    for action, words in [("replay", "Replayed 0"), ("delete", "Deleted 0")]:
        r = await post_form(api.client, f"/ui/dlq/{action}-one", "/ui/dlq", one=gone)
        assert await outcome(api, r) == f"{words}; 1 was no longer in the DLQ."
    r = await post_form(api.client, "/ui/dlq/replay-one", "/ui/dlq", one="x" * 65)
    assert r.status_code == 422
    counters = await api.counters()
    assert (counters.get("replayed", 0), counters.get("deleted", 0)) == (0, 1)


async def test_the_selected_are_replayed_or_deleted(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await bury(api, *[("A", f"r{i}") for i in range(5)])
    assert (await api.client.delete(f"/failed-events/{ids[4]}")).status_code == 204
    page = (await api.client.get("/ui/dlq")).text
    send = {"csrf": csrf_of(page), "id": [ids[0], ids[1], ids[4]]}
    with capture_logs() as logs:
        r = await api.client.post("/ui/dlq/replay-selected", data=send)
        assert await outcome(api, r) == "Replayed 2; 1 was no longer in the DLQ."
        r = await api.client.post("/ui/dlq/delete-selected", data={**send, "id": [ids[2], ids[3]]})
        assert await outcome(api, r) == "Deleted 2."
    counters = await api.counters()
    assert (counters.get("replayed", 0), counters.get("deleted", 0)) == (2, 3)
    assert shown((await api.client.get("/ui/dlq")).text) == []
    records = [(r["action"], r["target"]) for r in logs if r.get("logger") == LOGGER]
    assert records == [
        ("replay.dlq", "ids=3"),
        ("ui.replay-selected", "/ui/dlq/replay-selected"),
        ("dlq.delete", "ids=2"),
        ("ui.delete-selected", "/ui/dlq/delete-selected"),
    ]
    r = await api.client.post("/ui/dlq/replay-selected", data={"csrf": send["csrf"]})
    assert await outcome(api, r) == "Replayed 0."


async def test_all_that_match_are_counted_first_and_acted_on_when_confirmed(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await bury(api, ("A", "Disk full"), ("B", "disk FULL"), ("A", "other"), ("A", "disk full!"))
    r = await api.client.get("/ui/dlq", params={"type": "A", "q": "disk"})
    assert 'action="/ui/dlq/confirm"' in r.text
    r = await api.client.get("/ui/dlq/confirm", params={"do": "replay", "type": "A", "q": "disk"})
    assert r.status_code == 200, r.text
    assert re.search(r'<p id="matched"><strong>2</strong> dead events match now', r.text)
    assert await api.counters() == await api.counters()  # the count changed nothing
    assert (await api.counters()).get("replayed", 0) == 0
    with capture_logs() as logs:
        r = await api.client.post(
            "/ui/dlq/replay-matching", data={"csrf": csrf_of(r.text), "type": "A", "q": "disk"}
        )
        assert await outcome(api, r) == "Replayed 2."
    assert [(x["action"], x["target"], x["replayed"], x["reason_contains"], x["via"]) for x in logs
            if x.get("action") == "replay.dlq"] == [("replay.dlq", "type=A", 2, "disk", "ui")]  # fmt: skip
    assert shown((await api.client.get("/ui/dlq")).text) == [ids[2], ids[1]]

    r = await api.client.get("/ui/dlq/confirm", params={"do": "delete", "q": "DISK"})
    assert "<strong>1</strong> dead event matches now" in r.text
    r = await api.client.post("/ui/dlq/delete-matching", data={"csrf": csrf_of(r.text), "q": "DISK"})
    assert await outcome(api, r) == "Deleted 1."
    r = await api.client.get("/ui/dlq/confirm", params={"do": "delete", "q": "disk"})
    assert "No dead event matches now" in r.text
    assert "Confirm" not in r.text
    r = await api.client.get("/ui/dlq/confirm", params={"do": "replay"})  # no filter: the DLQ's length
    assert "<strong>1</strong> dead event matches now" in r.text
    assert (await api.client.get("/ui/dlq/confirm", params={"do": "drop"})).status_code == 422
    counters = await api.counters()
    assert (counters.get("replayed", 0), counters.get("deleted", 0)) == (2, 1)


async def test_a_long_count_shows_its_progress_and_counts_on(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_dlq, "COUNT_BUDGET_S", 0.0)  # one slice per request
    monkeypatch.setattr(dead, "COUNT_CHUNK", 2)
    api = await make_api()
    await bury(api, *[("A", "Disk full" if i % 2 else "other") for i in range(7)])
    r = await api.client.get("/ui/dlq/confirm", params={"do": "delete", "q": "disk"})
    seen = []
    while "Counting:" in r.text:
        m = re.search(r"Counting: <strong>(\d+)</strong> of the (\d+) dead events examined so far", r.text)
        assert m, r.text
        seen.append((int(m.group(1)), int(m.group(2))))
        more = link(r.text, "Count on")
        assert f'hx-get="{html.escape(more)}" hx-trigger="load"' in r.text  # htmx asks at once
        assert "Confirm" not in r.text  # no action before the count is whole
        r = await api.client.get(more)
        assert r.status_code == 200, r.text
    assert seen == [(1, 2), (2, 4), (3, 6)]
    assert "<strong>3</strong> dead events match now" in r.text
    r = await api.client.post("/ui/dlq/delete-matching", data={"csrf": csrf_of(r.text), "q": "disk"})
    assert await outcome(api, r) == "Deleted 3."
    r = await api.client.get("/ui/dlq/confirm", params={"do": "delete", "q": "disk", "counted": "garbage"})
    assert r.status_code == 422
    assert "cursor" in r.text


async def test_the_reason_filter_ignores_the_case_of_ascii_letters_only(make_api: MakeApi) -> None:
    api = await make_api(replay_rate=100_000)
    ids = await bury(api, ("A", "Échec"), ("A", "échec"), ("A", "ECHEC"))
    listed = (await api.client.get("/ui/dlq", params={"q": "échec"})).text
    assert shown(listed) == [ids[1]]
    listed = (await api.client.get("/ui/dlq", params={"q": "CHEC"})).text
    assert shown(listed) == ids[::-1]
    r = await api.client.get("/ui/dlq/confirm", params={"do": "replay", "q": "ÉCHEC"})
    assert "<strong>1</strong> dead event matches now" in r.text
    r = await api.client.post("/ui/dlq/replay-matching", data={"csrf": csrf_of(r.text), "q": "ÉCHEC"})
    assert await outcome(api, r) == "Replayed 1."
    assert shown((await api.client.get("/ui/dlq")).text) == [ids[2], ids[1]]


async def test_a_long_selection_goes_in_steps_that_continue(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_dlq, "STEP", 2)
    api = await make_api(replay_rate=100_000)
    await bury(api, *[("A", "gone") for _ in range(5)])
    page = (await api.client.get("/ui/dlq")).text
    r = await api.client.post("/ui/dlq/delete-matching", data={"csrf": csrf_of(page), "q": "gone"})
    steps = 1
    while r.status_code == 200:
        assert "More match: continue" in r.text
        cursor = html.unescape(re.findall(r'name="cursor" value="([^"]+)"', r.text)[0])
        so_far = re.findall(r'name="so_far" value="([0-9]+)"', r.text)[0]
        assert so_far == str(2 * steps)
        r = await api.client.post(
            "/ui/dlq/delete-matching",
            data={"csrf": csrf_of(page), "q": "gone", "cursor": cursor, "so_far": so_far},
        )
        steps += 1
    assert await outcome(api, r) == "Deleted 5."
    r = await api.client.post(
        "/ui/dlq/delete-matching", data={"csrf": csrf_of(page), "cursor": "garbage", "so_far": "x"}
    )
    assert r.status_code == 422
    assert "cursor" in r.text
    assert steps == 3
    assert (await api.counters()).get("deleted", 0) == 5


async def test_a_read_key_sees_no_action_and_may_not_act(settings: Settings) -> None:
    async with running(settings, loopback=True) as api:
        [dead] = await bury(api, ("A", "x"))
        token = await create_key(api, "read", name="viewer")
        assert (await sign_in(api.client, token)).status_code == 303
        page = await api.client.get("/ui/dlq")
        assert page.status_code == 200, page.text
        assert shown(page.text) == [dead]
        assert 'type="checkbox"' not in page.text
        assert "formaction" not in page.text
        assert "/ui/dlq/confirm" not in page.text
        csrf = csrf_of(page.text)  # the sign-out form's: a read key's session has one too
        with capture_logs() as logs:
            for path, data in [
                ("/ui/dlq/replay-one", {"one": dead}),
                ("/ui/dlq/delete-selected", {"id": dead}),
                ("/ui/dlq/replay-matching", {}),
            ]:
                r = await api.client.post(path, data={"csrf": csrf, **data})
                assert r.status_code == 403, path
        assert {(x["action"], x["outcome"], x["key_name"]) for x in logs if x.get("logger") == LOGGER} == {
            ("ui.replay-one", "denied", "viewer"),
            ("ui.delete-selected", "denied", "viewer"),
            ("ui.replay-matching", "denied", "viewer"),
        }
        assert (await api.client.get("/ui/dlq/confirm", params={"do": "delete"})).status_code == 403
        assert (await api.client.get(f"/failed-events/{dead}")).status_code == 200
        counters = await api.counters()
        assert (counters.get("replayed", 0), counters.get("deleted", 0)) == (0, 0)


async def test_an_admin_post_without_the_csrf_token_is_refused(settings: Settings) -> None:
    async with running(settings, loopback=True) as api:
        [dead] = await bury(api, ("A", "x"))
        token = await create_key(api, "admin", name="ops")
        assert (await sign_in(api.client, token)).status_code == 303
        page = (await api.client.get("/ui/dlq")).text
        assert f'name="id" value="{dead}"' in page
        for data in [{"one": dead}, {"one": dead, "csrf": "0" * 64}]:
            r = await api.client.post("/ui/dlq/replay-one", data=data)
            assert r.status_code == 403, data
            assert "CSRF" in r.text
        r = await api.client.post("/ui/dlq/delete-one", data={"one": dead, "csrf": csrf_of(page)})
        assert await outcome(api, r) == "Deleted 1."


async def test_hostile_reasons_and_tracebacks_show_as_text(api: Api) -> None:
    hostile = f"{SCRIPT} {IMG}"
    ids = await bury(api, ("A", hostile), ("A", f"short\n{IMG}"))
    for params in [{}, {"q": "script"}, {"q": IMG}]:
        r = await api.client.get("/ui/dlq", params=params)
        assert r.status_code == 200
        assert ids[0] in shown(r.text)
        assert SCRIPT not in r.text
        assert "<img" not in r.text
        assert html.escape(SCRIPT, quote=False) in r.text
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in r.text
    r = await api.client.get("/ui/dlq/confirm", params={"do": "replay", "q": IMG})
    assert "<img" not in r.text
    assert "<strong>2</strong>" in r.text
    r = await post_form(api.client, "/ui/dlq/replay-matching", "/ui/dlq", q=IMG)
    assert r.headers["location"] == "/ui/dlq?q=%22%3E%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E&replayed=2"
    assert "<img" not in (await api.client.get(r.headers["location"])).text
    r = await api.client.get("/ui/dlq", params={"replayed": "<b>1</b>", "deleted": "2"})
    assert "Deleted 2." in r.text
    assert "<b>1" not in r.text


async def test_over_partitions_the_search_misses_and_repeats_nothing(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_dlq, "SEARCH_BUDGET", 3)
    api = await make_api(partitions=4, replay_rate=100_000)
    ids = await bury(api, *[("A", "match me" if i % 3 else "other") for i in range(20)])
    wanted = {i for n, i in enumerate(ids) if n % 3}
    seen: list[str] = []
    r = await api.client.get("/ui/dlq", params={"q": "MATCH"})
    for _ in range(20):
        seen += shown(r.text)
        if "Continue searching older" not in r.text:
            break
        r = await api.client.get(link(r.text, "Continue searching older"))
    assert ": the oldest." in r.text
    assert len(seen) == len(set(seen))
    assert set(seen) == wanted
    page = (await api.client.get("/ui/dlq")).text
    r = await api.client.post("/ui/dlq/replay-matching", data={"csrf": csrf_of(page), "q": "match"})
    assert await outcome(api, r) == f"Replayed {len(wanted)}."
    assert set(shown((await api.client.get("/ui/dlq")).text)) == set(ids) - wanted
    r = await api.client.get("/ui/dlq/confirm", params={"do": "delete"})  # every partition's length
    assert f"<strong>{len(ids) - len(wanted)}</strong> dead events match now" in r.text


async def test_pages_go_older_and_back_to_the_newest(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_dlq, "PAGE_SIZE", 2)
    ids = await bury(api, ("A", "x"), ("A", "y"), ("A", "z"))
    r = await api.client.get("/ui/dlq")
    assert shown(r.text) == [ids[2], ids[1]]
    assert "Newest" not in r.text
    r = await api.client.get(link(r.text, "Older"))
    assert shown(r.text) == [ids[0]]
    assert ">Older<" not in r.text
    assert link(r.text, "Newest") == "/ui/dlq"
