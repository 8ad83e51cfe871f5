"""The benchmark command runs end to end on a tiny size (speed is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_benchmark_command_runs_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["drain_events"] == 2000
    for key in ("drain_events_per_s", "ingest_rps", "batch_events_per_s", "latency_events"):
        assert figures[key] > 0, key
    assert figures["ingest_errors"] == 0
    assert figures["batch_errors"] == 0
    assert "per queued event" in figures["memory"]
    assert "malloc" in figures["redis_server"]
    assert "EventStream benchmarks" in result.stdout
