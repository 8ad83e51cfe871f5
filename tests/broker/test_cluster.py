"""Redis Cluster: connect() picks the cluster client for a cluster node, the one-partition
Broker runs on a cluster, and a primary's crash is an outage the same client survives.

Every key of a deployment shares one hash tag, so one slot: the broker's keys live on
one primary. The tests put them on a primary other than the one in the URL, so every
command follows a MOVED. The session's cluster (``redis_cluster``) stays whole; the
crash test starts a cluster of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from eventstream.backends import open_broker
from eventstream.broker import (
    Broker,
    Completion,
    DeadLetter,
    Durability,
    Keys,
    Layout,
    ScheduledRetry,
    connect,
)
from eventstream.broker.scripts import Outcome
from eventstream.embedded import find_server_binary
from eventstream.errors import BackendError, RedisUnavailable, Unconfirmed
from tests.support.broker import deliver, ingest, key_in, make_items, put, set_idle
from tests.support.cluster import LocalCluster
from tests.support.conservation import check
from tests.support.factories import make_settings
from tests.support.servers import NO_REDIS, closed_port, missing, paused
from tests.support.tls import Pki, make_pki
from tests.support.waiting import wait_until


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
async def cluster_client(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = await connect(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


@pytest.fixture
def far_keys(redis_cluster: LocalCluster) -> Keys:
    """A prefix whose slot the URL's node does not serve."""
    return Keys(redis_cluster.prefix_away_from(redis_cluster.nodes[0]))


@pytest.fixture
async def cluster_broker(cluster_client: RedisCluster, far_keys: Keys) -> Broker:
    b = Broker(cluster_client, far_keys)
    await b.ensure_group()
    return b


# ---- connect -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["primary", "replica"])
async def test_any_node_gives_a_cluster_client(redis_cluster: LocalCluster, role: str) -> None:
    """A replica's URL serves too: the client learns the topology from it and sends every
    command to the primary of its slot."""
    node = redis_cluster.primaries()[0] if role == "primary" else redis_cluster.replicas()[0]
    client = await connect(node.url)
    try:
        assert isinstance(client, RedisCluster)
        keys = Keys(redis_cluster.prefix_away_from(node))
        assert await client.hset(keys.counters, "received", 1) == 1
        assert await client.hgetall(keys.counters) == {"received": "1"}  # decoded to str
    finally:
        await client.aclose()


async def test_a_single_server_gives_a_plain_client(redis_url: str) -> None:
    client = await connect(redis_url)
    try:
        assert type(client) is Redis
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_server_unreachable_at_connect_gives_a_plain_client(prefix: str) -> None:
    """The API starts while Redis is down (and answers 503): connect cannot ask the mode
    then, and assumes a single server (a cluster's processes must be restarted)."""
    client = await connect(f"redis://127.0.0.1:{closed_port()}/0", timeout=1.0)
    try:
        assert type(client) is Redis
        with pytest.raises(RedisUnavailable):
            await Broker(client, Keys(prefix)).counters()
    finally:
        await client.aclose()


async def test_the_cluster_client_has_the_options_of_the_plain_one(cluster_client: RedisCluster) -> None:
    options: dict[str, Any] = cluster_client.nodes_manager.connection_kwargs
    assert options["decode_responses"] is True
    assert options["socket_timeout"] == 5.0
    assert options["socket_connect_timeout"] == 5.0
    assert options["socket_keepalive"] is True
    assert options["health_check_interval"] == 15
    assert cluster_client.retry.get_retries() == 0  # a command is never sent twice
    await cluster_client.ping(target_nodes=RedisCluster.PRIMARIES)
    nodes = cluster_client.get_primaries()
    assert len(nodes) == 3
    # the guard against uvloop's RuntimeError on a closed transport, on every node
    assert {type(c).__name__ for n in nodes for c in n._connections} == {"GuardedConnection"}


async def test_a_cluster_url_with_a_database_is_refused(redis_cluster: LocalCluster) -> None:
    with pytest.raises(BackendError, match="SELECT is not allowed in cluster mode"):
        await connect(redis_cluster.url.removesuffix("/0") + "/1")


# ---- the broker on a cluster ---------------------------------------------------------


async def test_the_deployment_lives_on_a_node_the_url_does_not_name(
    redis_cluster: LocalCluster, cluster_broker: Broker
) -> None:
    keys = cluster_broker.keys
    home = redis_cluster.node_of_slot(key_slot(keys.prefix.encode()))
    assert home is not redis_cluster.nodes[0]
    await ingest(cluster_broker, 2)
    direct = Redis(port=home.port, decode_responses=True)  # reads its own keys only
    try:
        assert await direct.xlen(keys.stream) == 2
        assert await direct.hget(keys.counters, "received") == "2"
    finally:
        await direct.aclose()


async def test_ingest_read_and_the_scripts_called_alone(
    cluster_client: RedisCluster, cluster_broker: Broker
) -> None:
    """Scripts called outside a pipeline load themselves on NOSCRIPT (on every primary)."""
    b, keys = cluster_broker, cluster_broker.keys
    items = [*await ingest(b, 2), *make_items(1, key="order-1")]
    assert [outcome for _, outcome in await b.enqueue(items[2:], 60_000)] == [Outcome.NEW]
    retried = make_items(1, key="order-1")  # the client sends it again: the key names the first
    assert await b.enqueue(retried, 60_000) == [(items[2][0], Outcome.DUPLICATE)]
    got = await deliver(b, "c1", 3)
    assert [g.event_id for g in got] == [i[0] for i in items]

    assert await b.renew("c1", [got[0].ref], now_ms()) == []
    assert await b.renew("c2", [got[0].ref], now_ms()) == [got[0].ref]  # not c2's
    await set_idle(cluster_client, keys, "c1", [got[1].entry], 60_000)
    claimed, dead = await b.reclaim("c2", 30_000, 10, 10, now_ms())
    assert [c.entry for c in claimed] == [got[1].entry]
    assert dead == []
    located = await b.locate(got[2].event_id)
    assert located is not None
    assert located.status == "processing"
    assert await b.promote(now_ms()) == 0
    await b.release("c1", [got[0].ref], 60_000)
    assert not await b.leave("c1")  # it still owns an entry
    assert not await b.is_idle()
    await check(cluster_client, keys)
    assert await b.take_turn("retention", "me", 60_000) is True
    assert await b.take_turn("retention", "you", 60_000) is False


async def test_settle_on_primaries_that_never_loaded_its_scripts(
    cluster_client: RedisCluster, cluster_broker: Broker
) -> None:
    await cluster_client.script_flush()  # every primary: as on a new cluster, or a promoted replica
    await ingest(cluster_broker, 1)
    [got] = await deliver(cluster_broker, "c1", 1)
    assert await cluster_broker.settle("c1", done=[Completion(got.entry, got.event_id, False)]) == (
        [True],
        [],
        [],
    )


async def test_settle_promote_dead_letters_and_replay(
    cluster_client: RedisCluster, cluster_broker: Broker
) -> None:
    b, keys = cluster_broker, cluster_broker.keys
    items = await ingest(b, 4)
    got = await deliver(b, "c1", 4)
    env = {item[0]: item[1] for item in items}
    done = [Completion(got[0].entry, got[0].event_id, False)]
    retries = [ScheduledRetry(got[1].entry, got[1].event_id, now_ms() - 1, 1, 5, env[got[1].event_id])]
    dead = [DeadLetter(got[2].entry, got[2].event_id, "A", env[got[2].event_id], 1, "boom", "tb", 5, 6, True)]

    assert await b.settle("c2", [Completion(got[3].entry, got[3].event_id, False)]) == ([False], [], [])
    assert await b.settle("c1", done, retries, dead, [("handler:3", 1)]) == ([True], [True], [True])
    s = await check(cluster_client, keys)
    assert set(s.retry) == {got[1].event_id}
    located = await b.locate(got[1].event_id)
    assert located is not None
    assert located.status == "retrying"

    assert await b.promote(now_ms()) == 1
    located = await b.locate(got[1].event_id)
    assert located is not None
    assert located.status == "queued"
    located = await b.locate(got[2].event_id)
    assert located is not None
    assert located.status == "dead"
    assert await b.locate(got[0].event_id) is None  # processed: the store's now

    listed, _ = await b.list_dead(None, 10)
    assert [d.event_id for d in listed] == [got[2].event_id]
    assert await b.replay_dead([listed[0].position]) == [got[2].event_id]
    assert await b.list_dead(None, 10) == ([], None)

    counters, gauges, hist = await b.snapshot(now_ms(), 60_000)  # one MULTI, on one slot
    assert counters["received"] == 4
    assert counters["processed"] == 1
    assert counters["dead_lettered"] == 1
    assert gauges["queued"] == 2
    assert gauges["pending"] == 1
    assert gauges["dlq"] == 0
    assert hist == {"handler:3": 1}
    await check(cluster_client, keys)


async def test_snapshot_of_a_prefix_with_nothing_yet(cluster_client: RedisCluster, far_keys: Keys) -> None:
    b = Broker(cluster_client, far_keys)
    counters, gauges, _ = await b.snapshot(now_ms(), 60_000)  # XINFO GROUPS fails inside the MULTI
    assert counters == {}
    assert gauges["queued"] == 0
    assert gauges["pending"] == 0
    assert (await b.partitions[0].reads.sums()).length == 0


async def test_api_keys_and_the_backlog(cluster_broker: Broker) -> None:
    b = cluster_broker
    assert await b.claim_key_id("0123456789ab", "digest")
    await b.store_key("0123456789ab", {"s": "ingest", "n": "test"})  # a MULTI
    assert await b.key_ids() == {"0123456789ab"}
    assert await b.key_records(["0123456789ab"]) == [{"h": "digest", "s": "ingest", "n": "test"}]
    await ingest(b, 2)
    assert (await b.backlog(with_memory=False))[0] == 2


async def test_the_backlog_with_memory(cluster_broker: Broker) -> None:
    await ingest(cluster_broker, 1)
    queued, memory = await cluster_broker.backlog(with_memory=True)
    assert queued == 1
    assert int(memory["used_memory"]) > 0


async def test_safety_warnings(cluster_broker: Broker) -> None:
    assert await cluster_broker.safety_warnings() == []  # appendonly yes, noeviction


async def test_safety_warnings_check_every_primary(
    cluster_broker: Broker, redis_cluster: LocalCluster
) -> None:
    # the last primary: not the one in the URL, which a plain CONFIG GET would ask
    node = redis_cluster.primaries()[-1]
    admin: Any = Redis(port=node.port, decode_responses=True)
    await admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        warnings = await cluster_broker.safety_warnings()
    finally:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.aclose()
    assert warnings == [
        f"127.0.0.1:{node.port}: maxmemory-policy is 'allkeys-lru': Redis may evict queued events "
        "under memory pressure; set it to 'noeviction'"
    ]


# ---- a managed cluster: TLS and an ACL user, through open_broker ----------------------


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, Pki]]:
    if find_server_binary() is None:
        missing(NO_REDIS)
    pki = make_pki(tmp_path / "pki")
    with LocalCluster(tmp_path / "cluster", tls=pki) as c:
        yield c, pki


async def test_tls_and_the_acl_user_reach_every_node(
    tls_cluster: tuple[LocalCluster, Pki], tmp_path: Path
) -> None:
    """The settings' TLS files and credentials go to every node the client finds, not
    only the URL's: the deployment's keys are on another one."""
    c, pki = tls_cluster
    prefix = c.prefix_away_from(c.nodes[0])
    name, password = f"app-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    c.add_user(name, password, f"{{{prefix}}}*")
    tls = {"redis_tls_ca_file": pki.ca, "redis_username": name}
    settings = make_settings(c.tls_url(), prefix, tmp_path, redis_password=password, **tls)
    async with open_broker(settings) as broker:
        await broker.ensure_group()
        event_id = await put(broker, "TLS", {"secure": True})
        located = await broker.locate(event_id)
        assert located is not None
        assert located.status == "queued"

    wrong = make_settings(c.tls_url(), prefix, tmp_path, redis_password="wrong", **tls)
    with pytest.raises(BackendError, match="AuthenticationError"):
        async with open_broker(wrong):
            pass


# ---- a primary crashes ---------------------------------------------------------------


@pytest.fixture
def doomed_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own: it kills a primary."""
    if find_server_binary() is None:
        missing(NO_REDIS)
    with LocalCluster(tmp_path / "cluster") as c:
        yield c


async def test_a_primary_killed_is_an_outage_until_its_replica_is_promoted(
    doomed_cluster: LocalCluster,
) -> None:
    c = doomed_cluster
    keys = Keys(c.prefix_away_from(c.nodes[0]))  # the URL's node survives
    client = await connect(c.url)
    try:
        broker = Broker(client, keys)
        await broker.ensure_group()
        items = await ingest(broker, 2)
        home = c.node_of_slot(key_slot(keys.prefix.encode()))
        replica = c.replica_of(home)
        c.wait_replicated(home)

        c.kill(home)
        with pytest.raises(RedisUnavailable):  # not a raw redis-py exception
            await broker.counters()

        errors: list[str] = []

        async def served() -> bool:
            try:
                return await broker.counters() == {"received": 2}
            except RedisUnavailable as exc:
                errors.append(type(exc.__cause__).__name__)
                return False

        await wait_until(served, within=30, what="the replica promoted and found by the same client")
        assert c.node_of_slot(key_slot(keys.prefix.encode())) is replica
        assert set(errors) <= {
            "ConnectionError",
            "TimeoutError",
            "ClusterDownError",
            "RedisClusterUnreachableError",
        }, errors

        # the same client and broker carry on: a read, and a script the new primary
        # loads on NOSCRIPT (a script is not replicated: the promoted node has none)
        got = await deliver(broker, "c1", 2)
        assert [g.event_id for g in got] == [i[0] for i in items]
        await ingest(broker, 1)
        assert (await broker.counters())["received"] == 3
    finally:
        await client.aclose()


# ---- durability: WAIT on each node that wrote ------------------------------------------


async def test_ingest_waits_for_the_replicas_of_each_node_it_wrote_to(
    cluster_client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    layout = Layout(f"t{uuid.uuid4().hex[:12]}", 12)
    broker = Broker(cluster_client, layout, Durability(replicas=1, timeout_ms=300))
    await broker.claim_partitions()
    # keyed events over all twelve partitions: one WAIT per primary, each on the connection
    # that carried that primary's scripts; all confirmed
    items = [make_items(1, key=f"k-{i}")[0] for i in range(60)]
    results = await broker.enqueue(items, 60_000)
    assert [r[1] for r in results] == [Outcome.NEW] * 60

    # one primary's replica stops acknowledging: a write there is unconfirmed...
    victim = redis_cluster.node_of_slot(key_slot(layout.parts[0].stream.encode()))
    on_victim = key_in(layout, 0)
    elsewhere = next(
        p
        for p in range(12)
        if redis_cluster.node_of_slot(key_slot(layout.parts[p].stream.encode())) != victim
    )
    with paused(redis_cluster.replica_of(victim)):  # briefly: under the node timeout
        [item] = make_items(1, key=on_victim)
        with pytest.raises(Unconfirmed, match="only 0 of 1 replica") as caught:
            await broker.enqueue([item], 60_000)
        assert caught.value.results == [(item[0], Outcome.NEW)]  # queued all the same
        # ... and a write to another primary is not
        [other] = make_items(1, key=key_in(layout, elsewhere))
        assert await broker.enqueue([other], 60_000) == [(other[0], Outcome.NEW)]
    located = await broker.locate(item[0])
    assert located is not None
    assert located.status == "queued"


async def test_reads_go_straight_to_their_partitions_nodes(
    cluster_client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    """redis-py cannot find an XREADGROUP's key by itself and asks a node first (COMMAND
    GETKEYS): a round trip per read. The broker names the node instead."""
    broker = Broker(cluster_client, Layout(f"t{uuid.uuid4().hex[:12]}", 12))
    await broker.ensure_group()
    before = _getkeys_calls(redis_cluster)
    await broker.enqueue([make_items(1, key=f"k-{i}")[0] for i in range(30)], 60_000)
    got = []
    for _ in range(10):
        got += await broker.read_new("c1", 30 - len(got), 10)
    assert len(got) == 30
    assert await broker.read_new("c1", 10, 50) == []  # the sweep, then the blocking reads
    assert await broker.end_reads("c1") == []
    assert _getkeys_calls(redis_cluster) == before


def _getkeys_calls(cluster: LocalCluster) -> int:
    total = 0
    for node in cluster.primaries():
        with redis.Redis(port=node.port, decode_responses=True) as r:
            total += int(r.info("commandstats").get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total
