"""What clients were told against what became of it, for the outage tests.

``Poster`` posts events from a thread and records every answer: accepted (2xx with
an id), rejected (503 with Retry-After), other statuses, and unknown (the client
gave up: timeout or broken connection), each with its start and end time. With
``retries`` it posts a key answered 503 (or not answered) again, as a client should,
until a 2xx: every try is recorded.
``settle_truth`` drains and reads the truth (the store, the DLQ, the handler's side
effects); ``assert_conserved`` compares it with what the clients were told.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from tests.support.effects import count_side_effects
from tests.support.http import get_ok, metrics, page
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


@dataclass
class Post:
    n: int
    key: str
    started: float
    ended: float
    status: int | None  # None: unknown (the client got no answer)
    event_id: str | None = None
    retry_after: str | None = None
    detail: str = ""
    kind: str = "OK"
    attempt: int = 0  # 0: the first try of this key; n: its n-th retry
    queued_id: str | None = None  # a 503 that names the event it queued (not confirmed)


@dataclass
class Poster:
    """Posts ``{"type": kind, "payload": {"n": n}}`` with ``Idempotency-Key`` = a unique key, forever.

    ``kinds``: the n-th post's type is ``kinds[n % len(kinds)]`` (default: ``kind``).
    ``retries``: a post answered 503 or not answered is sent again, the same event
    under the same key, up to that many times (``retry_pause_s`` apart), before the
    next key; stopping ends the retries too."""

    base_url: str
    kind: str = "OK"
    timeout: float = 10.0
    pause_s: float = 0.0
    kinds: Sequence[str] = ()
    retries: int = 0
    retry_pause_s: float = 0.05
    posts: list[Post] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def start(self) -> Poster:
        self._thread = threading.Thread(target=self._run, name="poster", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Post]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
            assert not self._thread.is_alive(), "the poster did not stop"
        return self.posts

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            n = 0
            while not self._stop.is_set():
                kind = self.kinds[n % len(self.kinds)] if self.kinds else self.kind
                self._post(client, kind, n, f"{self.run_id}-{n}")
                n += 1
                if self.pause_s:
                    self._stop.wait(self.pause_s)

    def _post(self, client: httpx.Client, kind: str, n: int, key: str) -> None:
        for attempt in range(self.retries + 1):
            post = post_one(client, kind, n, key)
            post.attempt = attempt
            self.posts.append(post)
            if post.status is not None and post.status != 503:
                return
            if self._stop.wait(self.retry_pause_s):
                return

    def since(self, t: float) -> list[Post]:
        return [p for p in list(self.posts) if p.started >= t]


def post_one(client: httpx.Client, kind: str, n: int, key: str) -> Post:
    started = time.monotonic()
    try:
        r = client.post("/events", json={"type": kind, "payload": {"n": n}}, headers={"Idempotency-Key": key})
    except httpx.TransportError:
        return Post(n, key, started, time.monotonic(), None, kind=kind)
    post = Post(
        n, key, started, time.monotonic(), r.status_code, retry_after=r.headers.get("retry-after"), kind=kind
    )
    if r.is_success:
        post.event_id = r.json()["eventId"]
    else:
        post.detail = r.text[:300]
        if r.status_code == 503 and r.headers.get("content-type", "").endswith("json"):
            post.queued_id = r.json().get("eventId")
    return post


@dataclass
class Truth:
    processed: Counter[str]  # event id -> store rows (must be 1)
    dead: set[str]
    dead_listed: Counter[str]  # event id -> DLQ entries (must be 1)
    keys: dict[str, str]  # idempotency key -> event id, of every processed or dead event
    side_effects: Counter[str]
    metrics: dict[str, int]


SUCCESS_EFFECTS = ("OK", "SLOW", "SYNC_OK", "FLAKY")  # a handler's effect once it succeeded


def settle_truth(
    cluster: Cluster, client: httpx.Client, received: int | None, timeout: float = 60.0
) -> Truth:
    """Wait until everything accepted is settled; read the store, the DLQ and the side effects.

    ``received``: how many events Redis must have counted first; None when some may be
    lost (a failover without WAIT): then only until nothing is queued, in flight or
    scheduled (call it once nothing posts any more)."""
    seen: dict[str, int] = {}

    def drained() -> dict[str, int] | None:
        nonlocal seen
        seen = metrics(client)
        live = seen["queued"] + seen["pending"] + seen["scheduled"]
        return seen if seen["received"] >= (received or 0) and live == 0 else None

    m = wait_for(drained, f"{received or 'all'} events to be settled", timeout, 0.1, last=lambda: seen)
    items = page(client, "/events")
    dead = page(client, "/failed-events")
    keys = {it["idempotencyKey"]: it["id"] for it in items if it.get("idempotencyKey")}
    for d in dead:
        body = get_ok(client, f"/events/{d['id']}").json()
        if body.get("idempotencyKey"):
            keys[body["idempotencyKey"]] = d["id"]
    return Truth(
        Counter(it["id"] for it in items),
        {d["id"] for d in dead},
        Counter(d["id"] for d in dead),
        keys,
        sum((count_side_effects(cluster.side_file, kind) for kind in SUCCESS_EFFECTS), Counter()),
        m,
    )


def assert_conserved(
    posts: list[Post],
    truth: Truth,
    rejected_must_not_exist: list[Post] | None = None,
    *,
    may_lose: bool = False,
) -> dict[str, int]:
    """Nothing accepted lost, nothing unexpected, completion recorded once; returns counts.

    ``may_lose``: accepted events missing are counted (``lost``), not a failure; the
    rest holds all the same (each event found is processed or dead, once)."""
    accepted = {p.event_id for p in posts if p.status is not None and 200 <= p.status < 300}
    accepted.discard(None)
    processed = set(truth.processed)
    settled = processed | truth.dead
    unknown_keys = {p.key for p in posts if p.status is None or p.status >= 500}
    lost = accepted - settled
    assert may_lose or not lost, f"{len(lost)} accepted events were lost: {sorted(lost)[:5]}"
    assert not processed & truth.dead, "events both processed and dead"
    assert set(truth.processed.values()) <= {1}, "an event was recorded twice in the store"
    assert set(truth.dead_listed.values()) <= {1}, "an event is twice in the DLQ"
    # every settled event was accepted, or is the outcome of a post whose answer was unknown
    unexpected = {eid for key, eid in truth.keys.items() if eid not in accepted and key not in unknown_keys}
    assert not unexpected, f"events settled that no client was told about: {sorted(unexpected)[:5]}"
    if rejected_must_not_exist:
        revived = [p.key for p in rejected_must_not_exist if p.key in truth.keys]
        assert not revived, f"posts answered 503 were processed anyway: {revived[:5]}"
    m = truth.metrics
    assert m["processed"] == len(processed), (m, len(processed))
    assert m["received"] == len(settled), (m, len(settled))
    duplicate_effects = sum(c - 1 for c in truth.side_effects.values() if c > 1)
    return {
        "posts": len(posts),
        "accepted": len(accepted),
        "lost": len(lost),
        "rejected_503": sum(1 for p in posts if p.status == 503),
        "unknown": sum(1 for p in posts if p.status is None),
        "other_status": sum(1 for p in posts if p.status is not None and p.status not in (200, 202, 503)),
        "processed": len(processed),
        "dead": len(truth.dead),
        "settled_from_unknown": len(settled - accepted),
        "duplicate_side_effects": duplicate_effects,
        "reclaimed": m.get("reclaimed", 0),
        "rejected_completions": m.get("rejectedCompletions", 0),
        "redelivered_skipped": m.get("redeliveredSkipped", 0),
    }
