"""The benchmark command runs end to end on a tiny size (speed is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstream.embedded import find_server_binary
from tests.support.servers import NO_REDIS, missing

ROOT = Path(__file__).resolve().parent.parent


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.timeout(300)
def test_benchmark_command_runs_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = run_benchmarks("--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["drain_events"] == 2000
    assert figures["server_config"]["appendonly"] == "yes"
    assert figures["server_config"]["appendfsync"] == "everysec"
    for key in ("drain_events_per_s", "ingest_rps", "batch_events_per_s", "latency_events"):
        assert figures[key] > 0, key
    # the bare route and EventStream measured in as many alternating windows
    assert len(figures["ingest_windows"]) == len(figures["bare_windows"]) >= 1
    assert figures["ingest_share_of_bare"] == pytest.approx(
        figures["ingest_rps"] / figures["bare_rps"], abs=0.001
    )
    assert figures["ingest_errors"] == 0
    assert figures["batch_errors"] == 0
    # the batch rate is the events the deployment accepted, over the load's duration
    assert figures["batch_events_per_s"] == round(figures["batch_redis"]["events"] / figures["batch_seconds"])
    assert figures["drain_redis_us_per_event"] > 0
    assert figures["drain_worker_cpu_us_per_event"] > 0
    # the drain again with a plain def handler, run in the handler threads
    assert figures["drain_sync_events_per_s"] > 0
    assert figures["drain_sync_worker_cpu_us_per_event"] > 0
    assert "sync handler" in result.stdout
    assert figures["batch_redis"]["events"] > 0
    assert "per queued event" in figures["memory"]
    assert "malloc" in figures["redis_server"]
    assert "EventStream benchmarks" in result.stdout
    # the ceiling of single-event ingest, measured beside it in the same run
    assert figures["bare_rps"] > 0
    assert figures["ingest_share_of_bare"] == pytest.approx(
        figures["ingest_rps"] / figures["bare_rps"], abs=0.001
    )
    assert "Starlette" in result.stdout
    # the drain again with the PostgreSQL store, in a database of its own
    if "drain_pg_events_per_s" not in figures:
        [note] = [n for n in figures["notes"] if "PostgreSQL" in n]
        missing(note)
    assert figures["drain_pg_events_per_s"] > 0
    assert figures["drain_pg_redis_us_per_event"] > 0
    assert "PostgreSQL" in result.stdout


@pytest.mark.parametrize("mode", ["--producers", "--cluster"])
def test_without_wrk_the_ingest_benchmarks_refuse_to_print_figures(tmp_path: Path, mode: str) -> None:
    """Their tables are made of ingest figures, which only wrk measures (a Python load
    generator would measure itself): without wrk, and with no apt-get to install it
    from, they stop at once and say how to get it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", mode, "--json", str(tmp_path / "figures.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(bin_dir)},  # neither wrk nor apt-get
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "wrk is not installed, so no ingest figure was measured" in " ".join(result.stdout.split())
    assert not (tmp_path / "figures.json").exists()


@pytest.mark.timeout(300)
def test_cluster_benchmarks_run_on_one_server_and_on_a_local_cluster(tmp_path: Path) -> None:
    """--cluster: drain, batch ingest and reads on one server (1 and 12 partitions) and on
    a 3+3 cluster (12 partitions), with the Redis work of every node."""
    if find_server_binary() is None:
        missing(NO_REDIS)
    out = tmp_path / "figures.json"
    result = run_benchmarks("--cluster", "--json", str(out))
    setups = json.loads(out.read_text())["setups"]
    assert [s["partitions"] for s in setups] == [1, 12, 12]
    for setup in setups:
        assert setup["drain_events_per_s"] > 0
        assert setup["batch_errors"] == 0
        assert setup["reads"]["events"] > 0
        assert setup["reads"]["idle_commands_per_s"]["all"] > 0
        for phase in ("drain_redis", "batch_redis"):
            assert setup[phase]["cpu_us_per_event"] > 0
            primaries = [n for n in setup[phase]["nodes"] if n["role"] == "primary"]
            assert sum(n["events_share"] for n in primaries) == pytest.approx(1, abs=0.01)
    cluster = setups[2]
    assert [n["role"] for n in cluster["drain_redis"]["nodes"]] == ["primary"] * 3 + ["replica"] * 3
    assert sorted(cluster["partitions_by_node"].values()) == [4, 4, 4]
    assert "EventStream on a Redis Cluster" in result.stdout


@pytest.mark.timeout(300)
def test_ordering_benchmarks_compare_keyed_with_unkeyed(tmp_path: Path) -> None:
    """--ordering: the drain with and without ordering keys, and unkeyed latency alone and
    beside a busy key that stays busy to the end."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--ordering", "--json", str(out))
    figures = json.loads(out.read_text())
    drain = figures["ordering_drain"]
    assert (drain["events"], drain["keys"]) == (2000, 100)
    for side in ("plain", "keyed"):
        assert drain[side]["events_per_s"] > 0
        assert drain[side]["redis"]["cpu_us_per_event"] > 0
        assert drain[side]["worker_cpu_us_per_event"] > 0
        assert drain[side]["queueing_redis_us_per_event"] > 0
    assert drain["keyed_share"] > 0
    latency = figures["ordering_latency"]
    assert latency["alone"]["events"] > 0
    assert latency["busy"]["events"] > 0
    assert latency["busy"]["busy_key"]["ran"] > 0
    assert latency["busy"]["busy_key"]["parked_at_end"] > 0
    assert "EventStream ordering keys" in result.stdout


@pytest.mark.timeout(300)
def test_producer_benchmarks_put_each_producer_beside_its_raw_http_request(tmp_path: Path) -> None:
    """--producers: every producer and raw HTTP figure has a rate (each checked by the
    benchmark against the server's count), and each producer a ratio to its baseline."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--producers", "--repeat", "2", "--json", str(out))
    figures = json.loads(out.read_text())
    producers = figures["producers"]
    assert (producers["events"], producers["batch_events"], producers["repeats"]) == (100, 1000, 2)
    rows = producers["rows"]
    expected = {
        "client_send": "http_key",
        "async_send_4": "http_key_4",
        "async_send_32": "http_key_32",
        "send_batch_100": "http_batch_100",
        "send_batch_1000": "http_batch_1000",
        "background": "http_batch_1000",
        "publish": "http",
        "publish_sync": "http",
        "publish_32": "suite_ingest",
    }
    assert producers["baselines"] == expected
    for name in [*expected, *expected.values(), "suite_ingest", "suite_batch_100"]:
        row = rows[name]
        assert len(row["runs"]) == 2, name
        assert 0 < row["min"] <= row["events_per_s"] <= row["max"], name
    for name in expected:
        assert rows[name]["ratio_to_baseline"] > 0, name
    for run in figures["runs"]:
        for name in ("client_send", "publish_32"):
            assert run["producers"]["rows"][name]["events"] == 100
        assert run["producers"]["rows"]["background"]["events"] == 1000
        assert run["producers"]["rows"]["suite_ingest"]["errors"] == 0
    assert "EventStream producers" in result.stdout


def test_dashboard_benchmark_times_every_page_with_data(tmp_path: Path) -> None:
    """--dashboard: the store and the DLQ are filled through the product's paths, and every
    page answers 200 with a time (--quick: 20,000 rows and 2,000 dead events)."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--dashboard", "--json", str(out))
    figures = json.loads(out.read_text())["dashboard"]
    assert (figures["rows"], figures["dead"]) == (20_000, 2_000)
    assert len(figures["pages"]) >= 17
    for page in figures["pages"]:
        assert page["ok"], page
        assert 0 < page["median_ms"] <= page["p95_ms"] <= page["max_ms"], page
    assert "Dashboard pages" in result.stdout


@pytest.mark.timeout(300)
def test_payload_benchmarks_sweep_four_sizes_for_the_drain_and_the_batch_ingest(tmp_path: Path) -> None:
    """--payloads: 100 B to 100 KiB, each drained and ingested in batches, in events/s,
    MB/s and CPU per KiB."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--payloads", "--json", str(out))
    rows = json.loads(out.read_text())["payloads"]
    assert [r["payload_bytes"] for r in rows] == [100, 1024, 10 * 1024, 100 * 1024]
    assert [r["batch_per_request"] for r in rows] == [100, 100, 97, 9]
    for r in rows:
        assert r["drain_events"] > 0
        assert r["drain_redis_us_per_kib"] > 0
        assert r["batch_received"] > 0
        assert r["batch_errors"] == 0
        assert r["batch_events_per_s"] > 0
        assert r["batch_mb_per_s"] == pytest.approx(
            r["batch_events_per_s"] * r["payload_bytes"] / 1e6, rel=0.01
        )
        assert r["batch_redis_us_per_kib"] > 0
    for r in rows[:2]:  # 2,000 events: enough to time (a few hundred big ones may go in one read)
        assert r["drain_events_per_s"] > 0
        assert r["drain_mb_per_s"] == pytest.approx(
            r["drain_events_per_s"] * r["payload_bytes"] / 1e6, rel=0.01
        )
    assert "EventStream by payload size" in result.stdout


@pytest.mark.timeout(300)
def test_backlog_benchmark_measures_beside_a_long_queue_and_leaves_it_queued(tmp_path: Path) -> None:
    """--backlog (--quick: 5,000 queued, a drain of 2,000): the batch ingest and the drain
    each on an empty deployment and on one holding the backlog."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--backlog", "--json", str(out))
    b = json.loads(out.read_text())["backlog"]
    assert (b["backlog"], b["events"]) == (5000, 2000)
    for phase in ("ingest_empty", "drain_short", "queueing", "ingest_backlog", "drain_backlog"):
        assert b[phase]["events_per_s"] > 0, phase
        assert b[phase]["redis_us_per_event"] > 0, phase
        assert b[phase]["used_memory_mb"] > 0, phase
        assert 0 < b[phase]["kernel_share"] < 1, phase  # writing the AOF is the kernel's work
        assert b[phase]["aof_delayed_fsync"] >= 0, phase
    assert b["ingest_empty"]["errors"] == b["ingest_backlog"]["errors"] == 0
    assert b["drain_short"]["left_queued"] == 0
    # the worker is stopped after the first 2,000 of the backlog and what it ingested
    assert b["drain_backlog"]["left_queued"] > 5000 - 2000
    assert b["ingest_share"] == pytest.approx(
        b["ingest_backlog"]["events_per_s"] / b["ingest_empty"]["events_per_s"], abs=0.001
    )
    assert "events queued" in result.stdout


@pytest.mark.timeout(300)
def test_profile_benchmark_puts_every_sample_of_the_worker_and_the_api_in_a_part(tmp_path: Path) -> None:
    """--profile: py-spy samples the worker's drain and the API's ingest; every sample
    lands in one part, and the parts add up to the whole, per event."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--profile", "--json", str(out))
    figures = json.loads(out.read_text())
    if "profile" not in figures:
        [note] = [n for n in figures["notes"] if "py-spy" in n]
        missing(note)
    profile = figures["profile"]
    worker, api = profile["worker"], profile["api"]
    assert {"reading", "settle", "handler call", "Redis client", "store"} <= set(worker["us_per_event"])
    assert {"Redis client", "HTTP (uvicorn, Starlette, FastAPI)"} <= set(api["us_per_event"])
    for side in (worker, api):
        assert side["events"] > 0
        assert side["samples"] > 0
        assert sum(side["us_per_event"].values()) == pytest.approx(side["total_us_per_event"], rel=0.02)
    assert "Where the worker" in result.stdout


def test_app_cost_benchmark_drives_the_real_app_and_the_bare_route_in_process(tmp_path: Path) -> None:
    """--app-cost: the API's own CPU per request for single events and batches, beside the
    bare route; every request accepted (a refusal would stop the benchmark)."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--app-cost", "--server-args", "--appendonly no", "--json", str(out))
    figures = json.loads(out.read_text())
    assert figures["server_config"]["appendonly"] == "no"  # --server-args reached the server
    assert figures["server_args"] == "--appendonly no"
    cost = figures["app_cost"]
    assert cost["single"]["requests"] == cost["bare"]["requests"] == 320
    for part in ("single", "batch", "bare"):
        assert cost[part]["cpu_us_per_request"] > 0, part
        assert cost[part]["requests_per_s"] > 0, part
    assert "CPU per request" in result.stdout


@pytest.mark.timeout(300)
def test_latency_benchmark_alone_reports_each_run(tmp_path: Path) -> None:
    """--latency (--quick: 200 events/s for 1 s): each run's percentiles, every event
    sent measured, and the worker's CPU per event."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--latency", "--repeat", "2", "--json", str(out))
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2
    for f in runs:
        assert f["latency_events"] == 200
        assert 0 <= f["latency_p50_ms"] <= f["latency_p99_ms"] <= f["latency_max_ms"]
        assert f["latency_worker_cpu_us_per_event"] > 0
        assert "drain_events_per_s" not in f  # the latency alone
    assert "End to end" in result.stdout


@pytest.mark.timeout(300)
def test_ingest_benchmark_alone(tmp_path: Path) -> None:
    """--ingest: the bare route and POST /events in alternating windows, then batches;
    no other phase, and no row of one in the table."""
    out = tmp_path / "figures.json"
    result = run_benchmarks("--ingest", "--json", str(out))
    f = json.loads(out.read_text())
    for key in ("ingest_rps", "bare_rps", "batch_events_per_s"):
        assert f[key] > 0, key
    assert f["ingest_errors"] == 0
    assert not any(key.startswith(("drain", "latency")) for key in f)
    assert "POST /events" in result.stdout
    assert "drain" not in result.stdout
    assert "end-to-end" not in result.stdout


def test_spawned_processes_put_the_callers_pythonpath_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another checkout's src/ first on PYTHONPATH makes the API and the worker run its
    code (an A/B of two versions); the benchmarks' own root stays importable."""
    from benchmarks.harness import ROOT as BENCH_ROOT
    from benchmarks.harness import Run

    monkeypatch.setenv("PYTHONPATH", "/elsewhere/src")
    assert Run("redis://x", tmp_path).env("n")["PYTHONPATH"] == f"/elsewhere/src{os.pathsep}{BENCH_ROOT}"
    monkeypatch.delenv("PYTHONPATH")
    assert Run("redis://x", tmp_path).env("n")["PYTHONPATH"] == str(BENCH_ROOT)


def test_profile_parts_follow_the_innermost_frame_that_names_one() -> None:
    from benchmarks.profile import API, WORKER, classify, parse_raw

    loop = "run_forever (asyncio/base_events.py)"
    runner = "_settle_loop (eventstream/worker/runner.py)"
    stacks = {
        "Redis client": [
            loop,
            runner,
            "settle (eventstream/broker/broker.py)",
            "execute (redis/asyncio/client.py)",
        ],
        "store": [
            loop,
            runner,
            "write_rows (eventstream/worker/settle.py)",
            "execute (sqlalchemy/engine/base.py)",
        ],
        "settle": [loop, runner, "_settle (eventstream/worker/runner.py)"],
        "reading": [
            loop,
            "_read_loop (eventstream/worker/runner.py)",
            "from_fields (eventstream/broker/entries.py)",
        ],
        "handler call": [
            loop,
            "_handle (eventstream/worker/runner.py)",
            "run (eventstream/worker/dispatch.py)",
        ],
        "event loop": [loop, "_run_once (asyncio/base_events.py)"],
        "other": ["<module> (gc)"],
    }
    for part, frames in stacks.items():
        assert classify(frames, WORKER) == part, part
    ingest = [
        "run (uvicorn/server.py)",
        "__call__ (starlette/routing.py)",
        "accept (eventstream/ingest/accept.py)",
    ]
    assert classify(ingest, API) == "ingest (checks, envelope, enqueue)"
    framework = [
        "run (uvicorn/server.py)",
        "dispatch (eventstream/api/guard.py)",
        "call_next (starlette/middleware/base.py)",
    ]
    assert classify(framework, API) == "HTTP (uvicorn, Starlette, FastAPI)"  # inside EventStream's middleware
    assert classify(["run (uvicorn/server.py)", "dispatch (eventstream/api/guard.py)"], API) == (
        "auth, rate limits and the other middleware"
    )
    assert classify(["run (uvicorn/server.py)", "on_body (uvicorn/protocols/http.py)"], API) == (
        "HTTP (uvicorn, Starlette, FastAPI)"
    )
    assert parse_raw("a (x.py);b (y.py) 12\nnot a line\n") == [(["a (x.py)", "b (y.py)"], 12)]


def test_profile_leaves_out_helper_threads_waiting_for_work() -> None:
    """py-spy counts a thread blocked in a C call (a queue's get) as running: the store's
    writer thread, aiosqlite's and the handler threads waiting for work are left out,
    and the same threads at work are counted."""
    from benchmarks.profile import RATE_HZ, WORKER, parts_of

    boot = "_bootstrap (threading.py);_bootstrap_inner (threading.py);run (threading.py)"
    raw = "\n".join(
        [
            f"{boot};_worker (concurrent/futures/thread.py) 300",
            f"{boot};run (aiosqlite/core.py);get (queue.py);wait (threading.py) 200",
            f"{boot};_work (eventstream/worker/threads.py) 60",
            f"{boot};_connection_worker_thread (aiosqlite/core.py) 40",
            f"{boot};_worker (concurrent/futures/thread.py);run (concurrent/futures/thread.py);"
            "_insert (eventstream/store/sql.py);execute (sqlalchemy/engine/base.py) 50",
            "run_forever (asyncio/base_events.py);_run_once (asyncio/base_events.py) 25",
        ]
    )
    parts = parts_of(raw, WORKER, events=RATE_HZ)  # a sample: 4 ms / 250 events = 16 µs per event
    assert parts["idle_samples"] == 600
    assert parts["samples"] == 75
    assert parts["us_per_event"] == {"store": 800.0, "event loop": 400.0}


@pytest.mark.timeout(300)
def test_peer_comparison_measures_eventstream_with_the_main_harness(tmp_path: Path) -> None:
    """benchmarks.peers' own EventStream row (the peers themselves need their own venv,
    which the comparison installs and the suite does not)."""
    out = tmp_path / "peers.json"
    cmd = [sys.executable, "-m", "benchmarks.peers", "--only", "eventstream", "--events", "2000"]
    result = subprocess.run([*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = json.loads(out.read_text())["peers"]["eventstream"]
    assert row["status"] == "ok", row
    assert row["events_per_s"] > 0


@pytest.mark.timeout(120)
def test_soak_samples_memory_and_the_live_dedupe_records(tmp_path: Path) -> None:
    """benchmarks.soak for one 10-second round at 50 events/s (half with a key)."""
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "0.1", "--rate", "50", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env={**os.environ, "COLUMNS": "200"},  # the table's headers on one line
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first, last = json.loads(out.read_text())["samples"]
    assert first["dedupe_records"] == 0
    # half of the ~500 events had a key, each kept for the 60-s window
    assert 200 <= last["dedupe_live"] == last["dedupe_records"] <= 260
    assert last["dedupe_bytes"] > 0
    assert last["used_memory"] > first["used_memory"]
    assert "dedupe bytes per live record" in " ".join(result.stdout.split())
