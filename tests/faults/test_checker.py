"""The checker itself can fail: a lost event, an unexpected one, a duplicate effect of
the idempotent handler and broken counters are each caught (real API and worker)."""

from __future__ import annotations

import pytest

from eventstream.broker.keys import Keys
from tests.support.checker import Checker
from tests.support.faults import APP, fault_env, start_api
from tests.support.processes import Cluster


@pytest.mark.timeout(60)
def test_the_checker_catches_what_goes_wrong(cluster: Cluster) -> None:
    checker = Checker(cluster, start_api(cluster))
    with checker.client() as c:
        kept = [checker.send(c, "IDEM", ms=1) for _ in range(3)]
        doomed = checker.send(c, "WORK", ms=1)
        refused = checker.send(c, "", ms=1)  # an empty type: 422
        stray = c.post("/events", json={"type": "WORK", "payload": {"token": "never-sent"}})
    assert [s.outcome for s in [*kept, doomed]] == ["accepted"] * 4
    assert (refused.outcome, refused.status) == ("rejected", 422)
    assert stray.status_code == 202

    keys = Keys(cluster.prefix)
    with checker.redis() as r:  # lose one accepted event, as a bug would
        [(entry, _)] = [(e, f) for e, f in r.xrange(keys.stream) if f["id"] == doomed.event_id]
        r.xdel(keys.stream, entry)
        r.hdel(keys.status, doomed.event_id)
    worker = cluster.start_worker(APP, burst=True, **fault_env(cluster))
    assert cluster.wait_exit(worker, 60) == 0, worker.logs()
    checker.drain(timeout=30)

    v = checker.verify()
    assert v.lost == [doomed.event_id]
    assert v.unexpected == [stray.json()["eventId"]]
    assert v.rejected_processed == []
    assert any(p.startswith("conservation: 1") for p in v.stranded), v.stranded
    assert v.metrics_mismatch == {"received": (5, 4)}  # the stray counts; the checker never sent it
    assert v.duplicates.get("IDEM") == []
    with pytest.raises(AssertionError, match="lost events"):
        v.assert_ok(idempotent=("IDEM",))

    # an idempotent effect applied twice is caught too
    line = f"IDEM {kept[0].event_id} 1 1 0.0\n"
    with cluster.side_file.open("a") as f:
        f.write(line)
    assert checker.verify().duplicates["IDEM"] == [kept[0].event_id]
