"""The docs against a real API and worker: every curl of Getting started runs and answers
what the page shows, and every endpoint and metric the server has is documented."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.paths import REPO_ROOT
from tests.support.processes import Api, Cluster

DOCS = REPO_ROOT / "docs"
SHOP = "examples.shop:app"
# answers whose exact values hold on every run (ids, times and counts do not)
STABLE = ("message", "duplicate", "status", "title", "type", "eventStatus", "attempts")
READ_RETRY_S = 10.0
LIVE_OR_DEAD = {"queued", "processing", "retrying", "dead"}


def console_steps(page: Path) -> list[tuple[str, str]]:
    """Every ``$ command`` of the page's console blocks with the output shown under it."""
    steps: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
    return [(command, "\n".join(out)) for command, out in steps]


def as_json(text: str) -> Any:
    """A JSON object, or None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def same_shape(shown: Any, got: Any) -> bool:
    """Same keys, same stable values, and lists of items as long with items of the same shape."""
    if not isinstance(shown, dict) or not isinstance(got, dict) or shown.keys() != got.keys():
        return False
    for key, value in shown.items():
        if key in STABLE and value != got[key]:
            return False
        items = isinstance(value, list) and value and isinstance(value[0], dict)
        if items and (len(value) != len(got[key]) or not all(map(same_shape, value, got[key]))):
            return False
    return True


def matches(shown: str, got: str) -> bool:
    if (doc := as_json(shown)) is not None:
        return same_shape(doc, as_json(got))
    if "..." in shown and shown.startswith("{"):  # an abridged answer: the keys it names are there
        answer = as_json(got)
        return isinstance(answer, dict) and set(re.findall(r'"(\w+)":', shown)) <= answer.keys()
    return shown.strip() == got.strip()


def test_every_curl_in_getting_started_runs(cluster: Cluster, api: Api) -> None:
    cluster.start_worker(SHOP)
    steps = console_steps(DOCS / "getting-started.md")
    assert len(steps) >= 10
    assert all(command.startswith(("curl ", "sleep ")) for command, _ in steps)
    ids: dict[str, str] = {}  # an id the page shows -> the id this run got
    deleted_while_shown_retrying = False
    for command, shown in steps:
        for doc_id, real_id in ids.items():
            command, shown = command.replace(doc_id, real_id), shown.replace(doc_id, real_id)
        command = command.replace("localhost:8000", f"127.0.0.1:{api.port}")
        read = " -X " not in command and " -d " not in command and '"retrying"' not in shown
        deadline = time.monotonic() + (READ_RETRY_S if read else 0)
        while True:
            run = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
            )
            assert run.returncode == 0, f"{command}\n{run.stderr}"
            got = run.stdout.strip()
            if matches(shown, got) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if not matches(shown, got) and '"retrying"' in shown:
            # The page's worker is between two tries here; the test's worker retries
            # faster, so the event may be queued, in a try, or dead already (and a
            # DELETE then goes through at once).
            answer = as_json(got) or {}
            deleted_while_shown_retrying = got == "" and " DELETE " in command
            status = answer.get("eventStatus", answer.get("status"))
            assert deleted_while_shown_retrying or status in LIVE_OR_DEAD, f"{command}\n{got}"
            continue
        if shown == "204" and deleted_while_shown_retrying:
            assert got == "404", f"{command}\n{got}"
            continue
        assert matches(shown, got), f"{command}\nthe page shows:\n{shown}\nthe server answered:\n{got}"
        doc, answer = as_json(shown), as_json(got)
        if isinstance(doc, dict) and isinstance(answer, dict) and "eventId" in doc:
            ids[doc["eventId"]] = answer["eventId"]


def test_every_endpoint_and_metric_is_documented(api: Api) -> None:
    http_api = (DOCS / "reference" / "http-api.md").read_text()
    metrics = (DOCS / "reference" / "metrics.md").read_text()
    with httpx.Client(base_url=api.url, timeout=30.0) as client:
        paths = client.get("/openapi.json").json()["paths"]
        text = client.get("/metrics").text
    endpoints = [
        f"{method.upper()} {re.sub(r'{[^}]+}', '{id}', path)}"
        for path, ops in paths.items()
        for method in ops
    ]
    assert len(endpoints) >= 10
    assert [e for e in endpoints if f"`{e}`" not in http_api] == []
    families = re.findall(r"^# TYPE (eventstream_\w+) (\w+)$", text, re.MULTILINE)
    assert len(families) >= 10
    undocumented = []
    for family, kind in families:
        name = f"{family}_total" if kind == "counter" and not family.endswith("_total") else family
        rows = [line for line in metrics.splitlines() if line.startswith("|") and f"`{name}`" in line]
        if len(rows) != 1 or f"| {kind} |" not in rows[0]:
            undocumented.append(f"{name} ({kind})")
    assert undocumented == []
