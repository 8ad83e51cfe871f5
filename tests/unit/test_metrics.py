"""Metrics: histogram buckets, batch folding, and the Prometheus text."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventstream.ops.metrics import (
    BUCKETS_S,
    COUNTERS,
    GAUGES,
    HISTOGRAMS,
    ORDERING_GAUGES,
    HistogramBatch,
    Snapshot,
    bucket_index,
    render_prometheus,
    summary,
)


def test_buckets_are_sorted_and_positive() -> None:
    assert list(BUCKETS_S) == sorted(set(BUCKETS_S))
    assert BUCKETS_S[0] > 0


@pytest.mark.parametrize(
    ("seconds", "index"),
    [
        (0.0, 0),
        (-1.0, 0),
        (0.0005, 0),  # a value equal to a bound belongs to that bucket (le)
        (0.00051, 1),
        (0.001, 1),
        (0.3, 9),
        (60.0, len(BUCKETS_S) - 1),
        (60.0001, len(BUCKETS_S)),  # +Inf
        (1e9, len(BUCKETS_S)),
    ],
)
def test_bucket_index(seconds: float, index: int) -> None:
    assert bucket_index(seconds) == index


def test_every_bound_is_in_its_own_bucket() -> None:
    for i, bound in enumerate(BUCKETS_S):
        assert bucket_index(bound) == i
        assert bound <= BUCKETS_S[bucket_index(bound)]
        if i:
            assert bucket_index(math.nextafter(BUCKETS_S[i - 1], math.inf)) == i


def test_histogram_batch_fields() -> None:
    batch = HistogramBatch()
    assert batch.fields() == []
    batch.observe("handler", 0.002)
    batch.observe("handler", 0.002)
    batch.observe("handler", 100.0)
    batch.observe("e2e", 0.5)
    fields = dict(batch.fields())
    i = bucket_index(0.002)
    assert fields == {
        f"handler:{i}": 2,
        f"handler:{len(BUCKETS_S)}": 1,
        "handler:count": 3,
        "handler:sum_us": 2000 + 2000 + 100_000_000,
        f"e2e:{bucket_index(0.5)}": 1,
        "e2e:count": 1,
        "e2e:sum_us": 500_000,
    }
    assert all(isinstance(v, int) for v in fields.values())


def snapshot_with_data() -> Snapshot:
    counters = {
        "received": 10,
        "processed": 7,
        "failed": 4,
        "dead_lettered": 2,
        "rejected_completions": 1,
        "parked": 3,
        "released": 1,
    }
    gauges = {
        "queued": 1,
        "pending": 0,
        "scheduled": 0,
        "dlq": 2,
        "lag": 1,
        "workers": 3,
        "overdue_retries": 0,
        "parked": 2,
        "busy_keys": 1,
        "oldest_parked_ms": 2_500,
    }
    hist = {
        "handler:0": 2,
        "handler:3": 4,
        f"handler:{len(BUCKETS_S)}": 1,
        "handler:count": 7,
        "handler:sum_us": 2_500_000,
        "e2e:5": 7,
        "e2e:count": 7,
        "e2e:sum_us": 70_000,
    }
    return Snapshot(counters, gauges, hist)


def families(snap: Snapshot) -> dict[str, object]:
    text = render_prometheus(snap).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_text_parses_with_every_metric() -> None:
    fams = families(snapshot_with_data())
    for field in COUNTERS:
        assert f"eventstream_{field}" in fams
        assert fams[f"eventstream_{field}"].type == "counter"  # type: ignore[attr-defined]
    for field in GAUGES:
        assert fams[f"eventstream_{field}"].type == "gauge"  # type: ignore[attr-defined]
    for _, (metric, _) in HISTOGRAMS.items():
        assert fams[metric].type == "histogram"  # type: ignore[attr-defined]
    for metric, _, _ in ORDERING_GAUGES.values():
        assert fams[metric].type == "gauge"  # type: ignore[attr-defined]
    assert "eventstream_overdue_retries" not in fams


def test_ordering_figures() -> None:
    fams = families(snapshot_with_data())
    assert sample_values(fams["eventstream_parked"]) == {("eventstream_parked_total", ""): 3}
    assert sample_values(fams["eventstream_released"]) == {("eventstream_released_total", ""): 1}
    assert sample_values(fams["eventstream_ordering_parked"]) == {("eventstream_ordering_parked", ""): 2}
    assert sample_values(fams["eventstream_ordering_busy_keys"]) == {
        ("eventstream_ordering_busy_keys", ""): 1
    }
    wait = sample_values(fams["eventstream_ordering_oldest_wait_seconds"])
    assert wait == {("eventstream_ordering_oldest_wait_seconds", ""): 2.5}  # ms in, seconds out
    out = summary(snapshot_with_data())
    assert (out["parked"], out["busyKeys"], out["oldestParkedMs"]) == (2, 1, 2_500)
    assert (out["parkedTotal"], out["releasedTotal"]) == (3, 1)


def test_partition_gauges_include_parked() -> None:
    parts = ({"queued": 1, "parked": 2}, {"queued": 0, "parked": 5})
    fams = families(Snapshot({}, {"parked": 7}, {}, parts))
    parked = fams["eventstream_partition_parked"]
    assert parked.type == "gauge"  # type: ignore[attr-defined]
    assert {s.labels["partition"]: s.value for s in parked.samples} == {"0": 2, "1": 5}  # type: ignore[attr-defined]


def sample_values(fam: object) -> dict[tuple[str, str], float]:
    out = {}
    for s in fam.samples:  # type: ignore[attr-defined]
        out[(s.name, s.labels.get("le", ""))] = s.value
    return out


def test_counter_and_gauge_values() -> None:
    fams = families(snapshot_with_data())
    assert sample_values(fams["eventstream_processed"])[("eventstream_processed_total", "")] == 7
    assert sample_values(fams["eventstream_duplicates"])[("eventstream_duplicates_total", "")] == 0
    assert sample_values(fams["eventstream_workers"])[("eventstream_workers", "")] == 3


def test_histogram_buckets_are_cumulative() -> None:
    fams = families(snapshot_with_data())
    values = sample_values(fams["eventstream_handler_duration_seconds"])
    name = "eventstream_handler_duration_seconds_bucket"
    les = [le for (n, le) in values if n == name]
    assert [float(le) for le in les] == [*BUCKETS_S, math.inf]
    counts = [values[(name, le)] for le in les]
    assert counts == sorted(counts)  # never decreasing
    assert counts[0] == 2
    assert counts[2] == 2
    assert counts[3] == 6
    assert counts[-2] == 6  # 60 s
    assert counts[-1] == 7  # +Inf includes the overflow bucket
    assert values[("eventstream_handler_duration_seconds_count", "")] == 7
    assert values[("eventstream_handler_duration_seconds_sum", "")] == pytest.approx(2.5)
    e2e = sample_values(fams["eventstream_end_to_end_seconds"])
    assert e2e[("eventstream_end_to_end_seconds_count", "")] == 7
    assert e2e[("eventstream_end_to_end_seconds_sum", "")] == pytest.approx(0.07)


def test_empty_snapshot_renders_zeros() -> None:
    fams = families(Snapshot({}, {}, {}))
    values = sample_values(fams["eventstream_end_to_end_seconds"])
    assert all(v == 0 for v in values.values())
    assert sample_values(fams["eventstream_received"])[("eventstream_received_total", "")] == 0


def test_summary_uses_json_names_and_defaults_to_zero() -> None:
    out = summary(snapshot_with_data())
    assert out["deadLettered"] == 2
    assert out["rejectedCompletions"] == 1
    assert out["redeliveredSkipped"] == 0
    assert out["dlq"] == 2
    assert set(out) == (
        {j for j, _ in COUNTERS.values()}
        | {j for j, _ in GAUGES.values()}
        | {j for _, j, _ in ORDERING_GAUGES.values()}
    )
