"""deploy/prometheus (alert rules, their unit tests, an example scrape config) and
deploy/grafana (a dashboard), checked with promtool against the REAL /metrics.

A real API process and a real worker (two partitions, so the per-partition gauges are
there) process real events: some succeed, one after retries, two are dead-lettered,
two share an ordering key. Prometheus scrapes that API with a `read` key, as
prometheus.yml does. Its exposition must pass `promtool check metrics`, and every
metric the rules and the dashboard query must be in it. The rules pass `promtool check
rules` and their unit tests (`promtool test rules alerts.test.yml`: each alert fires on
its trouble and stays quiet on a healthy deployment); every dashboard query parses as
PromQL. Last, a real Prometheus runs prometheus.yml against that API: it scrapes with
the key, evaluates every rule without error, and every dashboard query returns series.
promtool and prometheus come with Debian's `prometheus` package (scripts/test installs
it when run as root): missing, these tests skip locally and fail with CI=true.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from eventstream.embedded import free_port
from tests.support.paths import REPO_ROOT
from tests.support.processes import Cluster
from tests.support.servers import missing
from tests.support.waiting import wait_for

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "eventstream.json"
GUIDE = REPO_ROOT / "docs" / "guides" / "operating.md"
SERVICE = REPO_ROOT / "deploy" / "kubernetes" / "base" / "api-service.yaml"  # the ServiceMonitor's
SEVERITIES = {"critical", "warning", "info"}
# eventstream_* identifiers in PromQL (histogram series keep their _bucket suffix)
METRIC = re.compile(r"\beventstream_[a-z0-9_]+\b")


def promtool(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        missing("promtool is not installed: apt-get install prometheus (scripts/test does, run as root)")
    assert found is not None
    return subprocess.run(
        [found, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def as_promql(expr: str, job: str = ".*") -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would."""
    return expr.replace("$__rate_interval", "1m").replace("$job", job)


def series_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and line[0] != "#"}


# ---- the real /metrics -------------------------------------------------------------------


def _key(cluster: Cluster, scope: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "create", "--name", f"prom-{scope}", "--scope", scope],
        env=cluster.env(), cwd=cluster.tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Deployment:
    """A real API (at ``host``, ``/metrics`` readable with ``read_key``) and its worker, after
    real work; ``exposition``: its /metrics then."""

    host: str
    read_key: str
    exposition: str


@pytest.fixture(scope="module")
def deployment(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    cluster = Cluster(redis_url, f"m{uuid.uuid4().hex[:12]}", tmp_path_factory.mktemp("monitoring"))
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = "2"
    try:
        writer, reader = _key(cluster, "ingest"), _key(cluster, "read")
        port = free_port()
        api = cluster.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], cluster.env())
        cluster.wait_ready(api, port)
        worker = cluster.start_worker()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30.0) as client:
            events: list[dict[str, Any]] = [
                *({"type": "OK", "payload": {"n": n}} for n in range(3)),
                {"type": "FLAKY", "payload": {}},  # processed on its third try
                {"type": "FAIL", "payload": {}},  # dead after three
                {"type": "PERM", "payload": {}},  # dead at once
                *({"type": "SLOW", "payload": {"ms": 50}, "orderingKey": "k"} for _ in range(2)),
            ]
            for body in events:
                answer = client.post("/events", json=body, headers={"Authorization": f"Bearer {writer}"})
                assert answer.status_code == 202, answer.text
            read = {"Authorization": f"Bearer {reader}"}
            assert client.get("/metrics").status_code == 401  # hence the key in prometheus.yml
            refused = client.post(
                "/events", json={"type": "OK"}, headers={"Authorization": f"Bearer {writer}"}
            )
            assert refused.status_code == 422  # counted in eventstream_ingest_refused_total

            def settled() -> dict[str, int] | None:
                s: dict[str, int] = client.get(
                    "/metrics", headers={**read, "Accept": "application/json"}
                ).json()
                busy = s["queued"] + s["pending"] + s["scheduled"] + s["parked"]
                return s if (s["processed"], s["deadLettered"], busy) == (6, 2, 0) else None

            wait_for(settled, "6 events processed and 2 dead-lettered", timeout=60)
            answer = client.get("/metrics", headers=read)
            assert answer.status_code == 200
        yield Deployment(f"127.0.0.1:{port}", reader, answer.text)
        assert cluster.stop(worker) == 0
        assert cluster.stop(api) == 0
    finally:
        cluster.cleanup()


@pytest.fixture
def exposition(deployment: Deployment) -> str:
    return deployment.exposition


def test_promtool_finds_no_problem_in_the_real_metrics(exposition: str) -> None:
    found = promtool("check", "metrics", stdin=exposition)
    assert (found.returncode, found.stdout + found.stderr) == (0, "")
    # ...and they are the real figures, partitions included
    values = dict(line.rsplit(" ", 1) for line in exposition.splitlines() if line and line[0] != "#")
    assert float(values["eventstream_processed_total"]) == 6
    assert float(values["eventstream_dead_lettered_total"]) == 2
    assert float(values["eventstream_failed_total"]) == 6  # FLAKY twice, FAIL three times, PERM once
    assert float(values["eventstream_parked_total"]) >= 1
    assert {values[f'eventstream_partition_dlq{{partition="{p}"}}'] for p in "01"} <= {"0.0", "1.0", "2.0"}


def test_promtool_check_metrics_does_find_problems() -> None:
    """The check above can fail: a counter without _total and without help is reported."""
    found = promtool("check", "metrics", stdin="# TYPE eventstream_things counter\neventstream_things 1\n")
    assert found.returncode != 0
    assert "_total" in found.stdout + found.stderr


def test_every_metric_the_rules_and_the_dashboard_query_is_exposed(exposition: str) -> None:
    exposed = series_names(exposition)
    queried = {
        name for expr in [r["expr"] for r in rules()] + dashboard_exprs() for name in METRIC.findall(expr)
    }
    assert queried - exposed == set()
    # what the dashboard must show, at least
    dashboard_names = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    wanted = {
        *(f"eventstream_{c}_total" for c in ("received", "processed", "failed", "retried", "dead_lettered")),
        *(f"eventstream_{g}" for g in ("queued", "pending", "scheduled", "dlq", "workers")),
        "eventstream_ordering_parked",
        "eventstream_ordering_oldest_wait_seconds",
        "eventstream_handler_duration_seconds_bucket",
        *(name for name in exposed if name.startswith("eventstream_partition_")),
    }
    assert wanted - dashboard_names == set()


# ---- the alert rules ---------------------------------------------------------------------


def test_the_alert_rules_pass_promtool() -> None:
    found = promtool("check", "rules", str(ALERTS))
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"SUCCESS: {len(rules())} rules found" in found.stdout


def test_each_alert_fires_on_its_trouble_and_is_quiet_when_healthy() -> None:
    found = promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS)
    assert found.returncode == 0, found.stdout + found.stderr
    # every alert is tested both ways
    cases = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    names = {rule["alert"] for rule in rules()}
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == names
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == names


def test_the_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule that no longer fires on its trouble fails `promtool test rules`."""
    broken = ALERTS.read_text().replace("} == 0", "} == 2", 1)  # EventStreamTargetDown's
    assert broken != ALERTS.read_text()
    (tmp_path / ALERTS.name).write_text(broken)
    shutil.copy(ALERT_TESTS, tmp_path)
    found = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert found.returncode != 0
    assert "EventStreamTargetDown" in found.stdout + found.stderr


def test_each_alert_says_how_bad_what_and_how_much() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert "for" in rule, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        if not rule["expr"].startswith("absent("):  # absent() has no value worth saying
            assert "$value" in rule["annotations"]["description"], rule["alert"]


def test_the_guide_explains_every_alert() -> None:
    section = GUIDE.read_text().split("## Prometheus alerts and the Grafana dashboard")[1]
    explained = re.findall(r"^\| `(EventStream\w+)` \| (\w+) \|", section, re.MULTILINE)
    assert explained == [(rule["alert"], rule["labels"]["severity"]) for rule in rules()]


def test_the_example_config_passes_promtool(tmp_path: Path) -> None:
    """prometheus.yml as installed: with the rules beside it and its key file in place."""
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert (job["job_name"], job["metrics_path"]) == ("eventstream", "/metrics")
    assert job["authorization"]["type"] == "Bearer"
    key_file = tmp_path / "eventstream-api-key"
    key_file.write_text("es_read_key")
    text = CONFIG.read_text().replace(job["authorization"]["credentials_file"], str(key_file))
    (tmp_path / CONFIG.name).write_text(text)
    shutil.copy(ALERTS, tmp_path)
    found = promtool("check", "config", str(tmp_path / CONFIG.name))
    assert found.returncode == 0, found.stdout + found.stderr
    assert "SUCCESS: 1 rule files found" in found.stdout


def test_the_rules_select_the_jobs_that_scrape_eventstream() -> None:
    """The job of prometheus.yml, and the ServiceMonitor's (the name of the Service it selects)."""
    (job,) = yaml.safe_load(CONFIG.read_text())["scrape_configs"]
    service = yaml.safe_load(SERVICE.read_text())["metadata"]["name"]
    assert service == "eventstream-api"
    selectors = re.findall(r'job=~?"([^"]*)"', ALERTS.read_text())
    assert len(selectors) == 2
    for selector in selectors:
        assert all(re.fullmatch(selector, name) for name in (job["job_name"], service)), selector


# ---- the dashboard -----------------------------------------------------------------------


def test_the_dashboard_imports_as_is() -> None:
    d = dashboard()
    assert (d["id"], d["uid"], d["title"]) == (None, "eventstream-overview", "EventStream")
    assert d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    source = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["job"]["datasource"] == source
    panels = dashboard_panels()
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
    for p in panels:
        assert p["datasource"] == source, p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"] == source and t["expr"] for t in p["targets"]), p["title"]
        assert all('job=~"$job"' in t["expr"] for t in p["targets"]), p["title"]
    # the panels tile the grid: within 24 columns, none overlapping
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule."""
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    found = promtool("check", "rules", str(path))
    assert found.returncode == 0, found.stdout + found.stderr
    # the check can fail: a query with a stray bracket is refused
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "r", "expr": "max(x"}]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


# ---- a real Prometheus -------------------------------------------------------------------


def _prometheus_config(tmp_path: Path, deployment: Deployment) -> Path:
    """prometheus.yml as installed, on the test's API, scraping and evaluating every second."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [deployment.host]}]
    key_file = tmp_path / "eventstream-api-key"
    key_file.write_text(deployment.read_key)
    job["authorization"]["credentials_file"] = str(key_file)
    path = tmp_path / CONFIG.name
    path.write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path)
    return path


def test_prometheus_scrapes_with_the_example_config_and_runs_every_query(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The real server (Debian's package, beside promtool): it scrapes the API with the read
    key, evaluates every rule without error, and every dashboard query returns series."""
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus is not installed: apt-get install prometheus (scripts/test does, run as root)")
    assert binary is not None
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={_prometheus_config(tmp_path, deployment)}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0) as api:

            def get(path: str, **params: str) -> Any:
                assert server.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    answer = api.get(path, params=params)
                except httpx.TransportError:
                    return None
                return answer.json()["data"] if answer.status_code == 200 else None

            def query(expr: str) -> list[dict[str, Any]] | None:
                found = get("/query", query=expr)
                return found["result"] if found and found["result"] else None

            def targets_up() -> bool:
                found = get("/targets")
                return bool(found) and [t["health"] for t in found["activeTargets"]] == ["up"]

            wait_for(targets_up, "Prometheus to scrape the API with the read key", timeout=30)
            # two scrapes at least, so that rate() has two samples in its window
            wait_for(
                lambda: query("count_over_time(eventstream_workers[1m]) >= 3"), "three scrapes", timeout=30
            )

            def evaluated() -> list[dict[str, Any]] | None:
                found = get("/rules")
                ran = [r for g in found["groups"] for r in g["rules"]] if found else []
                done = ran and all(not r["lastEvaluation"].startswith("0001") for r in ran)
                return ran if done else None

            ran = wait_for(evaluated, "every rule evaluated", timeout=30)
            assert {r["name"] for r in ran} == {r["alert"] for r in rules()}
            assert [r["name"] for r in ran if r["health"] != "ok"] == []
            empty = [e for e in dashboard_exprs() if not query(as_promql(e, job="eventstream"))]
            assert empty == []
            (processed,) = query("eventstream_processed_total") or [{}]
            assert processed["metric"]["job"] == "eventstream"
            assert processed["metric"]["instance"] == deployment.host
            assert processed["value"][1] == "6"
    finally:
        server.terminate()
        server.wait(30)
        log.close()
