"""Per-key ordering across real processes: an API, workers running
tests/support/apps/ordering.py (each try of a handler records its start and end), on one
partition, on four of one server, and on twelve over the test Redis Cluster.

What the tests read back is what the handlers recorded: for one ordering key, tries
never overlap and the first successful try of each event comes in acceptance order,
through random failures, retries, a worker killed with SIGKILL, a key that always
fails and a DLQ replay; with ``key_concurrency=3``, three at once and never more.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstream.broker import Layout, connect
from eventstream.broker.keys import order_digest
from tests.support.apps.ordering import RUNS_FILE_ENV, Run, runs
from tests.support.cli import run_cli
from tests.support.conservation import assert_law_in_redis, assert_state, state
from tests.support.http import get_metrics, page_all, wait_drained
from tests.support.processes import Cluster, Proc
from tests.support.waiting import wait_for

APP = "tests.support.apps.ordering:app"
LAYOUTS = {"one-partition": ("server", 1), "four-partitions": ("server", 4), "cluster": ("cluster", 12)}


@pytest.fixture(params=list(LAYOUTS))
def cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Cluster:
    """Every process with EVENTSTREAM_PARTITIONS set, on the session's server or on its
    Redis Cluster (3 primaries, 3 replicas)."""
    where, partitions = LAYOUTS[request.param]
    if where == "cluster":
        cluster.redis_url = request.getfixturevalue("redis_cluster").url
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = str(partitions)
    return cluster


@pytest.fixture
def runs_file(tmp_path: Path) -> Path:
    return tmp_path / "runs.jsonl"


def start_workers(cluster: Cluster, client: httpx.Client, runs_file: Path, n: int, **env: str) -> list[Proc]:
    workers = cluster.start_workers(n, APP, **{RUNS_FILE_ENV: str(runs_file)}, **env)
    wait_for(lambda: get_metrics(client)["workers"] == n, f"{n} workers to start", timeout=60)
    return workers


def post(client: httpx.Client, events: list[dict[str, Any]], batch: int = 500) -> list[str]:
    """Post in batches; the ids of the accepted events, in acceptance order."""
    ids: list[str] = []
    for start in range(0, len(events), batch):
        r = client.post("/events/batch", json={"events": events[start : start + batch]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (len(body["results"]), 0, 0)
        ids += [item["eventId"] for item in body["results"]]
    return ids


def keys_in_one_partition(cluster: Cluster, names: Iterable[str], like: str) -> list[str]:
    """The ordering keys among ``names`` whose partition is that of the key ``like``."""
    layout = Layout(cluster.prefix, int(cluster.settings_env["EVENTSTREAM_PARTITIONS"]))
    home = layout.partition_of(order_digest(like))
    return [k for k in names if layout.partition_of(order_digest(k)) == home]


def by_key(tries: Iterable[Run]) -> dict[str | None, list[Run]]:
    out: dict[str | None, list[Run]] = defaultdict(list)
    for t in tries:
        out[t.key].append(t)
    return out


def overlaps(tries: list[Run], killed_at: float | None = None) -> list[tuple[Run, Run]]:
    """Pairs of tries (in start order) where the second started before the first ended; a
    try with no end ran until ``killed_at`` (its process was killed)."""
    found = []
    latest: Run | None = None
    latest_end = float("-inf")
    for t in sorted(tries, key=lambda r: r.start):
        if latest is not None and t.start < latest_end:
            found.append((latest, t))
        end = t.end if t.end is not None else (killed_at if killed_at is not None else float("inf"))
        if end > latest_end:
            latest, latest_end = t, end
    return found


def most_at_once(tries: list[Run]) -> int:
    """The most tries running at one instant (an end before a start at the same time)."""
    edges = sorted([(t.start, 1) for t in tries] + [(t.end or float("inf"), -1) for t in tries])
    at_once = peak = 0
    for _, step in edges:
        at_once += step
        peak = max(peak, at_once)
    return peak


def first_successes(tries: list[Run]) -> list[str]:
    """Event ids in the order of their first successful try."""
    seen: dict[str, None] = {}
    for t in sorted(tries, key=lambda r: r.start):
        if t.outcome == "ok":
            seen.setdefault(t.event_id, None)
    return list(seen)


def assert_clean(
    cluster: Cluster, client: httpx.Client, accepted: list[str], dead: Iterable[str] = ()
) -> None:
    """Each accepted event is in the store or (``dead``) in the DLQ, exactly once; the
    audit (every partition) is clean and no ordering record is left in Redis."""
    processed_ids = [it["id"] for it in page_all(client, "/events")]
    dead_ids = [it["id"] for it in page_all(client, "/failed-events")]
    doubled = [i for i, n in Counter(processed_ids + dead_ids).items() if n > 1]
    assert not doubled, f"{len(doubled)} events listed twice in the store and the DLQ: {doubled[:5]}"
    assert set(dead_ids) == set(dead)
    assert set(processed_ids) == set(accepted) - set(dead), "every other accepted event is in the store"
    received = len(accepted)

    run = run_cli("audit", "--json", env=cluster.env())
    assert run.code == 0, run.stderr
    audit = json.loads(run.stdout)
    assert audit["ok"] is True, audit["problems"]
    assert (audit["received"], audit["processed"], audit["dlq"], audit["parked"]) == (
        received,
        len(processed_ids),
        len(dead_ids),
        0,
    )

    async def records() -> None:
        redis: Any = await connect(cluster.redis_url)  # a Redis or a RedisCluster
        try:
            layout = Layout(cluster.prefix, int(cluster.settings_env["EVENTSTREAM_PARTITIONS"]))
            await assert_law_in_redis(redis, layout)
            lease = layout.deployment.lease("")  # the workers' retention job takes turns by one
            for part in layout.parts:
                s = await state(redis, part)
                assert_state(replace(s, stray=[k for k in s.stray if not k.startswith(lease)]))
                assert (s.order, s.lines, s.parked, s.waiting) == ({}, {}, {}, {}), "ordering records left"
        finally:
            await redis.aclose()

    asyncio.run(records())


# ---- 200 keys x 50 events, random failures and sleeps, a worker killed -9 ---------------

KEYS, PER_KEY = 200, 50
# each try sleeps 2-4 ms, one in a hundred 1 s (so that a kill finds some running), and
# fails one time in seven
STEP = {"ms": 4, "slow": 0.01, "slow_ms": 1000, "fail": 0.15}


@pytest.mark.timeout(180)
def test_each_key_in_acceptance_order_one_at_a_time_through_failures_and_a_kill(
    cluster: Cluster, client: httpx.Client, runs_file: Path
) -> None:
    workers = start_workers(cluster, client, runs_file, 3, EVENTSTREAM_VISIBILITY_TIMEOUT="2")
    rng = random.Random(14)
    deck = [f"account-{k}" for k in range(KEYS) for _ in range(PER_KEY)]
    rng.shuffle(deck)  # the keys interleaved at random, each key's events in sequence
    seq: Counter[str] = Counter()
    events = []
    for key in deck:
        events.append({"type": "ORDERED", "orderingKey": key, "payload": {"seq": seq[key], **STEP}})
        seq[key] += 1
    ids = post(client, events)
    total = len(ids)
    assert total == KEYS * PER_KEY
    line: dict[str, list[str]] = defaultdict(list)  # key -> its event ids in acceptance order
    for key, event_id in zip(deck, ids, strict=True):
        line[key].append(event_id)

    # kill -9, once a third of the events are done, a worker running a handler that has
    # 100 ms or more to go
    wait_for(
        lambda: runs_file.exists() and runs_file.read_bytes().count(b'"outcome":"ok"') >= total // 3,
        "a third of the events to be handled",
        timeout=60,
        interval=0.02,
    )
    busy = wait_for(
        lambda: (
            [
                t.pid
                for t in runs(runs_file, last_bytes=200_000)
                if t.end is None and t.start + t.sleep_s > time.time() + 0.1
            ]
            or None
        ),
        "a worker in the middle of a long try",
        timeout=30,
        interval=0.01,
    )
    [victim] = [w for w in workers if w.pid == busy[0]]
    cluster.kill9(victim)
    killed_at = time.time()
    at_kill = get_metrics(client)

    final = wait_drained(client, total, timeout=90)
    tries = runs(runs_file)
    unfinished = [t for t in tries if t.end is None]
    assert all(t.pid == victim.pid for t in unfinished), "only the killed worker left tries unfinished"
    assert all(t.start <= killed_at for t in unfinished)

    problems: list[str] = []
    for k, its in by_key(tries).items():
        assert k is not None
        if clash := overlaps(its, killed_at):
            a, b = clash[0]
            problems.append(
                f"{k}: {len(clash)} overlaps, e.g. seq {a.seq} (try {a.attempt}) with seq {b.seq}"
            )
        if (firsts := first_successes(its)) != line[k]:
            got = [ids.index(i) for i in firsts]
            problems.append(f"{k}: first successes in order {got[:10]}..., accepted {len(line[k])}")
        seqs = [t.seq for t in its]
        if seqs != sorted(seqs):
            problems.append(f"{k}: a try of an earlier event after one of a later event: {seqs}")
    assert not problems, f"{len(problems)} breaches of the order: {problems[:5]}"

    succeeded = Counter(t.event_id for t in tries if t.outcome == "ok")
    assert set(succeeded) == set(ids), "every event succeeded once at least"
    twice = {i for i, n in succeeded.items() if n > 1}
    # a second success only for an event the killed worker had handled and not yet settled
    assert all(
        any(t.pid == victim.pid and t.outcome == "ok" for t in tries if t.event_id == i) for i in twice
    ), "an event succeeded twice without the kill"
    failed = sum(t.outcome == "failed" for t in tries)
    print(
        f"{total} events, {len(tries)} tries: {failed} random failures, {len(unfinished)} cut by the kill, "
        f"{len(twice)} events run twice; at the kill {at_kill['processed']} processed, "
        f"{at_kill['pending']} in flight; {final['reclaimed']} reclaimed, "
        f"{final['redeliveredSkipped']} found in the store and not run again"
    )
    assert at_kill["processed"] < total, "the worker was not killed mid-run"
    assert unfinished, "the worker was killed in the middle of a try"
    assert final["reclaimed"] >= 1, "the killed worker's entries were taken over"
    assert (final["received"], final["processed"], final["deadLettered"]) == (total, total, 0)
    assert failed > 0
    for event_id in rng.sample(ids, 10):
        r = client.get(f"/events/{event_id}")
        assert (r.status_code, r.json()["status"]) == (200, "processed"), r.text
    for w in workers:
        if w is not victim:
            cluster.stop(w)
    assert_clean(cluster, client, ids)


# ---- a key that always fails does not delay the others ----------------------------------


POISONED = 10  # events of the poisoned key: each fails 3 tries of 100-200 ms, then is dead


def measure(client: httpx.Client, runs_file: Path, keys: list[str], tag: str) -> dict[str, float]:
    """Post one event to each of ``keys`` every 30 ms for 40 rounds; each one's latency
    (s) from acceptance to the end of its successful try, by event id."""
    ids: list[str] = []
    for n in range(40):
        ids += post(
            client, [{"type": "ORDERED", "orderingKey": k, "payload": {"seq": n, "tag": tag}} for k in keys]
        )
        time.sleep(0.03)
    wanted = set(ids)

    def done() -> dict[str, float] | None:
        ended = {
            t.event_id: t.end - t.received_ms / 1000
            for t in runs(runs_file)
            if t.event_id in wanted and t.outcome == "ok" and t.end
        }
        return ended if len(ended) == len(wanted) else None

    return wait_for(done, f"the {len(ids)} events of {tag} to be handled", timeout=60)


@pytest.mark.timeout(150)
def test_a_key_that_always_fails_does_not_delay_other_keys_of_its_partition(
    cluster: Cluster, client: httpx.Client, runs_file: Path, tmp_path: Path
) -> None:
    cured = tmp_path / "cured"
    start_workers(cluster, client, runs_file, 2)
    others = keys_in_one_partition(cluster, (f"customer-{i}" for i in range(1000)), like="poisoned")[:10]
    assert len(others) == 10

    without = measure(client, runs_file, others, "without")

    poisoned = post(
        client,
        [
            {
                "type": "POISON",
                "orderingKey": "poisoned",
                "payload": {"seq": n, "ms": 200, "fail_unless": str(cured)},
            }
            for n in range(POISONED)
        ],
    )
    wait_for(lambda: any(t.key == "poisoned" for t in runs(runs_file)), "the poisoned key's first try")
    began = time.time()
    with_poison = measure(client, runs_file, others, "with")
    ended = time.time()

    # the poisoned key was busy all along (a key with parked events has one released) and
    # tried again and again
    poison_tries = [t.start for t in runs(runs_file) if t.key == "poisoned" and began <= t.start <= ended]
    assert len(poison_tries) >= 3, "the poisoned key was hardly tried during the measurement"
    last = client.get(f"/events/{poisoned[-1]}").json()
    assert (last["status"], last["orderingKey"]) == ("queued", "poisoned"), last
    assert "parkedAt" in last, last

    a, b = statistics.median(without.values()), statistics.median(with_poison.values())
    print(
        f"median latency of other keys: {a * 1000:.1f} ms without the poisoned key, {b * 1000:.1f} ms with it"
    )
    assert b < 3 * a + 0.2, f"the poisoned key delayed the others: median {b:.3f}s vs {a:.3f}s without it"

    final = wait_drained(client, 2 * 400 + POISONED, timeout=60)
    assert final["deadLettered"] == POISONED
    dead = page_all(client, "/failed-events")
    # dead one after another, in acceptance order (the listing is newest first)
    assert [d["id"] for d in reversed(dead)] == poisoned
    assert all(d["attempts"] == 3 for d in dead)
    assert_clean(cluster, client, [*without, *with_poison, *poisoned], dead=poisoned)

    # cured, and replayed all at once (oldest first): they run in acceptance order
    cured.touch()
    r = client.post("/failed-events/replay", params={"type": "POISON"})
    assert (r.status_code, r.json()["replayed"], r.json()["nextCursor"]) == (202, POISONED, None), r.text
    wait_drained(client, 2 * 400 + POISONED, timeout=30)
    assert [t.event_id for t in runs(runs_file) if t.key == "poisoned" and t.outcome == "ok"] == poisoned
    assert_clean(cluster, client, [*without, *with_poison, *poisoned])


# ---- key_concurrency=3 ----------------------------------------------------------------


@pytest.mark.timeout(90)
def test_key_concurrency_3_runs_three_of_a_key_at_once_and_never_more(
    cluster: Cluster, client: httpx.Client, runs_file: Path
) -> None:
    start_workers(cluster, client, runs_file, 2)
    keyed = post(
        client,
        [{"type": "FANOUT", "orderingKey": "tenant-1", "payload": {"seq": n, "ms": 150}} for n in range(30)],
    )
    free = post(client, [{"type": "FANOUT", "payload": {"seq": n, "ms": 150}} for n in range(30)])
    wait_drained(client, 60, timeout=60)

    tries = runs(runs_file)
    of_key = [t for t in tries if t.key == "tenant-1"]
    assert Counter(t.event_id for t in of_key) == Counter(keyed), "each event of the key ran once"
    assert all(t.outcome == "ok" for t in tries)
    assert most_at_once(of_key) == 3, "three of the key at once, never more"
    unkeyed = [t for t in tries if t.key is None]
    assert Counter(t.event_id for t in unkeyed) == Counter(free)
    assert most_at_once(unkeyed) > 3, "events with no ordering key are not limited"
    assert_clean(cluster, client, keyed + free)


# ---- crashes and replays keep the order -------------------------------------------------


@pytest.mark.timeout(90)
def test_an_event_whose_worker_was_killed_runs_again_before_the_later_events_of_its_key(
    cluster: Cluster, client: httpx.Client, runs_file: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    workers = start_workers(cluster, client, runs_file, 2, EVENTSTREAM_VISIBILITY_TIMEOUT="1")
    events = [{"type": "ORDERED", "orderingKey": "order-7", "payload": {"seq": 0, "gate": str(gate)}}]
    events += [{"type": "ORDERED", "orderingKey": "order-7", "payload": {"seq": n}} for n in range(1, 5)]
    ids = post(client, events)
    [first] = wait_for(lambda: runs(runs_file) or None, "the first event to start")
    assert first.event_id == ids[0]
    for event_id in ids[1:]:
        r = client.get(f"/events/{event_id}").json()
        assert (r["status"], r["orderingKey"], "parkedAt" in r) == ("queued", "order-7", True), r

    [victim] = [w for w in workers if w.pid == first.pid]
    cluster.kill9(victim)
    killed_at = time.time()
    gate.touch()
    final = wait_drained(client, 5, timeout=30)

    tries = runs(runs_file)
    assert [(t.seq, t.outcome) for t in tries] == [
        (0, None),
        (0, "ok"),
        (1, "ok"),
        (2, "ok"),
        (3, "ok"),
        (4, "ok"),
    ]
    assert tries[1].start > killed_at
    assert tries[1].pid != victim.pid
    assert not overlaps(tries, killed_at)
    assert final["reclaimed"] == 1
    assert_clean(cluster, client, ids)


@pytest.mark.timeout(90)
def test_a_replayed_dead_event_goes_to_the_back_of_its_key_line(
    cluster: Cluster, client: httpx.Client, runs_file: Path, tmp_path: Path
) -> None:
    allowed, gate = tmp_path / "allowed", tmp_path / "gate"
    start_workers(cluster, client, runs_file, 2)
    key = "document-3"
    [one] = post(
        client,
        [{"type": "ORDERED", "orderingKey": key, "payload": {"seq": 1, "refuse_unless": str(allowed)}}],
    )
    wait_for(lambda: client.get(f"/failed-events/{one}").status_code == 200, "event 1 to be dead")
    two, three = post(
        client,
        [
            {"type": "ORDERED", "orderingKey": key, "payload": {"seq": 2, "gate": str(gate)}},
            {"type": "ORDERED", "orderingKey": key, "payload": {"seq": 3}},
        ],
    )
    wait_for(lambda: any(t.event_id == two for t in runs(runs_file)), "event 2 to start")
    allowed.touch()
    r = client.post(f"/failed-events/{one}/replay")
    assert r.status_code == 202, r.text
    replayed_at = time.time()
    again = client.get(f"/events/{one}").json()
    assert (again["status"], again["orderingKey"], "parkedAt" in again) == ("queued", key, True), again
    gate.touch()
    wait_drained(client, 3, timeout=30)

    tries = runs(runs_file)
    assert [(t.event_id, t.outcome) for t in tries] == [
        (one, "refused"),
        (two, "ok"),
        (three, "ok"),
        (one, "ok"),
    ]
    assert (tries[1].end or 0) > replayed_at, "event 2 was running at the replay"
    assert not overlaps(tries)
    assert_clean(cluster, client, [one, two, three])


@pytest.mark.timeout(90)
def test_a_keyed_event_dead_after_too_many_deliveries_lets_the_next_of_its_key_run(
    cluster: Cluster, client: httpx.Client, runs_file: Path, tmp_path: Path
) -> None:
    never = tmp_path / "never"
    workers = start_workers(
        cluster, client, runs_file, 2, EVENTSTREAM_VISIBILITY_TIMEOUT="1", EVENTSTREAM_MAX_DELIVERIES="1"
    )
    events = [{"type": "ORDERED", "orderingKey": "parcel-5", "payload": {"seq": 0, "gate": str(never)}}]
    events += [{"type": "ORDERED", "orderingKey": "parcel-5", "payload": {"seq": n}} for n in range(1, 4)]
    ids = post(client, events)
    [first] = wait_for(lambda: runs(runs_file) or None, "the first event to start")
    [victim] = [w for w in workers if w.pid == first.pid]
    cluster.kill9(victim)
    final = wait_drained(client, 4, timeout=30)

    # delivered once with no outcome: reclaim dead-letters it and lets the next one in
    tries = runs(runs_file)
    assert [(t.seq, t.outcome) for t in tries] == [(0, None), (1, "ok"), (2, "ok"), (3, "ok")]
    dead = client.get(f"/failed-events/{ids[0]}")
    assert dead.status_code == 200, dead.text
    assert dead.json()["reason"].startswith("WorkerLost"), dead.json()
    assert (final["deadLettered"], final["reclaimed"]) == (1, 0)
    assert_clean(cluster, client, ids, dead=ids[:1])


@pytest.mark.timeout(60)
def test_a_duplicate_of_a_parked_event_is_not_parked_again(
    cluster: Cluster, client: httpx.Client, runs_file: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    start_workers(cluster, client, runs_file, 1)
    first, second = post(
        client,
        [
            {"type": "ORDERED", "orderingKey": "cart-2", "payload": {"seq": 0, "gate": str(gate)}},
            {"type": "ORDERED", "orderingKey": "cart-2", "id": "cart-2-line-1", "payload": {"seq": 1}},
        ],
    )
    again = {"type": "ORDERED", "orderingKey": "cart-2", "id": "cart-2-line-1", "payload": {"seq": 1}}
    r = client.post("/events", json=again)
    assert (r.status_code, r.json()["eventId"], r.json()["duplicate"]) == (200, second, True), r.text
    r = client.post("/events/batch", json={"events": [again]})
    assert (r.json()["duplicates"], r.json()["results"][0]["eventId"]) == (1, second), r.text
    gate.touch()
    final = wait_drained(client, 2, timeout=30)

    assert [(t.event_id, t.outcome) for t in runs(runs_file)] == [(first, "ok"), (second, "ok")]
    assert (final["received"], final["processed"], final["duplicates"]) == (2, 2, 2)
    assert_clean(cluster, client, [first, second])


@pytest.mark.parametrize("cluster", ["one-partition"], indirect=True)
@pytest.mark.timeout(60)
def test_a_processed_event_still_shows_its_ordering_key(
    cluster: Cluster, client: httpx.Client, runs_file: Path
) -> None:
    start_workers(cluster, client, runs_file, 1)
    [event_id] = post(client, [{"type": "ORDERED", "orderingKey": "invoice-9", "payload": {"seq": 0}}])
    wait_drained(client, 1, timeout=30)
    r = client.get(f"/events/{event_id}")
    assert r.json()["status"] == "processed", r.text
    assert r.json().get("orderingKey") == "invoice-9", r.text
