"""A private Redis Cluster of real server processes, for the tests that need one.

Each node is a server started through ``eventstream.embedded`` (the code ``eventstream
up`` uses) with ``cluster-enabled yes``, its own directory, cluster config file and
cluster bus port (a free one: the default, port + 10000, may be taken or out of range).
The cluster is built the way an operator would by hand: ``CLUSTER ADDSLOTSRANGE`` on
the primaries, ``CLUSTER MEET``, then ``CLUSTER REPLICATE`` on the replicas; it is ready
when every node says ``cluster_state:ok``, every node reports the same slot map, and
every replica's link to its primary is up. The nodes are started in parallel (most of
the start is the servers' own: a primary waits about 2 s before it says ``ok``).

Importing this module needs neither pytest nor the test dependencies: the benchmarks
(``python -m benchmarks --cluster``) start their cluster with it, and so does
``scripts/cluster`` (``python -m tests.support.cluster``), which runs one in the
foreground. Without a server binary, ``LocalCluster()`` raises ConfigError; the tests'
fixtures check for the binary first (skip locally, fail in CI).

``cluster-node-timeout`` is low (1 s by default), so that after ``kill()`` of a primary
the cluster promotes its replica within a few seconds.

With ``tls`` (tests/support/tls.py's certificates) the nodes speak TLS to clients, on
the cluster bus and for replication, as a managed cluster does; ``tls_url()`` names a
node's TLS port, and ``add_user`` makes an ACL user on every node.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis.crc import key_slot

from eventstream.embedded import EmbeddedRedis, free_port
from eventstream.errors import ConfigError

if TYPE_CHECKING:
    from tests.support.tls import Pki

SLOTS = 16384

Shape = list[tuple[int, int, int, tuple[int, ...]]]  # (first slot, last slot, primary port, replica ports)


def slot_ranges(primaries: int) -> list[tuple[int, int]]:
    """The slots split evenly, as redis-cli --cluster create splits them (3: 0-5460,
    5461-10922, 10923-16383)."""
    per = SLOTS / primaries
    return [(round(i * per), round((i + 1) * per) - 1) for i in range(primaries)]


class LocalCluster:
    """``primaries`` primaries with ``replicas`` replicas each, on 127.0.0.1.

    ``nodes`` keeps its order: the primaries as created first (``nodes[i]`` serves the
    i-th range of ``slot_ranges``), then their replicas. Roles change after a failover:
    ``primaries()`` and ``replicas()`` ask the cluster.
    """

    def __init__(
        self,
        root: Path,
        primaries: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        tls: Pki | None = None,
        fsync: str = "always",
    ) -> None:
        self.root = root
        self.fsync = fsync  # appendfsync: the benchmarks use the single server's, everysec
        self.node_timeout_ms = node_timeout_ms
        self.tls = tls
        self.tls_ports: dict[int, int] = {}  # port -> TLS port, with ``tls``
        self.ranges = slot_ranges(primaries)
        self.nodes = [self._node(i) for i in range(primaries * (1 + replicas))]
        self.ids: dict[int, str] = {}  # port -> cluster node id

    def _node(self, i: int, attempt: int = 0) -> EmbeddedRedis:
        node = EmbeddedRedis(
            self.root / (f"node{i}" if not attempt else f"node{i}-{attempt}"),
            fsync=self.fsync,
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-port", str(free_port()),
                "--enable-debug-command", "local",
                "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            ],
        )  # fmt: skip
        if self.tls is not None:
            # TLS for clients, the cluster bus and replication; the plain port stays, for
            # the start-up probe and the admin commands here
            self.tls_ports[node.port] = free_port()
            node.extra_args += [
                "--tls-port", str(self.tls_ports[node.port]),
                "--tls-cert-file", str(self.tls.server_cert),
                "--tls-key-file", str(self.tls.server_key),
                "--tls-ca-cert-file", str(self.tls.ca),
                # the bus's outgoing side: a certificate made for a client
                "--tls-client-cert-file", str(self.tls.client_cert),
                "--tls-client-key-file", str(self.tls.client_key),
                "--tls-auth-clients", "no",
                "--tls-cluster", "yes",
                "--tls-replication", "yes",
            ]  # fmt: skip
        return node

    @property
    def url(self) -> str:
        """The URL of the first node (a primary at first, serving slots 0-5460 of 3 ranges)."""
        return self.nodes[0].url

    def tls_url(self, node: EmbeddedRedis | None = None) -> str:
        """The rediss:// URL of ``node`` (default: the first), with ``tls``."""
        return f"rediss://127.0.0.1:{self.tls_ports[(node or self.nodes[0]).port]}/0"

    def start(self, timeout_s: float = 30.0, attempts: int = 3) -> LocalCluster:
        for attempt in range(1, attempts + 1):
            try:
                self._start_nodes()
                break
            except ConfigError:
                # A port picked free was taken before its server bound it (by another
                # server, or as a connection's own port): all again, on fresh ports.
                self.stop()
                if attempt == attempts:
                    raise
                self.nodes = [self._node(i, attempt) for i in range(len(self.nodes))]
        try:
            self._build(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nodes(self) -> None:
        """Every node started, or (when one fails) every other one still started, for
        stop() to stop: none is left running unowned."""
        if self.tls is not None:
            self._choose_tls_binary()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.start() if n.process is None else n, self.nodes))

    def _build(self, deadline: float) -> None:
        n_primaries = len(self.ranges)
        for node in self.nodes:
            self.ids[node.port] = _admin(node, "CLUSTER", "MYID")
        for node, (first, last) in zip(self.nodes, self.ranges, strict=False):
            _admin(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            _admin(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", node.port, _bus_port(node))
        _wait(deadline, "every node to know every other", self._joined)
        for i, node in enumerate(self.nodes[n_primaries:]):
            primary = self.nodes[i % n_primaries]
            _admin(node, "CLUSTER", "REPLICATE", self.ids[primary.port])
        _wait(deadline, "cluster_state:ok and one slot map on every node", self.settled)

    def _choose_tls_binary(self) -> None:
        """The first binary built with TLS (the embedded one may lack it), found by
        starting the first node with each."""
        from tests.support.servers import missing  # the tests' TLS only: needs pytest
        from tests.support.tls import NO_TLS_SERVER, tls_candidates

        first = self.nodes[0]
        for binary in dict.fromkeys(b for b in tls_candidates() if b):
            first.binary = binary
            try:
                first.start()
            except ConfigError:  # built without TLS: the next one
                continue
            for node in self.nodes[1:]:
                node.binary = binary
            return
        missing(NO_TLS_SERVER)

    def add_user(self, name: str, password: str, key_pattern: str) -> None:
        """An ACL user on every node (ACLs are each node's own) that may run every command
        on the keys of ``key_pattern``."""
        for node in self.nodes:
            _admin(node, "ACL", "SETUSER", name, "on", f">{password}", f"~{key_pattern}", "+@all")

    def _joined(self) -> bool:
        for node in self.nodes:
            lines = str(_admin(node, "CLUSTER", "NODES")).strip().splitlines()
            if len(lines) != len(self.nodes) or any(
                "handshake" in line or "noaddr" in line or " connected" not in line for line in lines
            ):
                return False
        return True

    def settled(self) -> bool:
        """Every live node says ok, reports the same full slot map with every replica
        attached, and every replica's link to its primary is up."""
        live = [n for n in self.nodes if n.process is not None]
        shapes = set()
        for node in live:
            if "cluster_state:ok" not in str(_admin(node, "CLUSTER", "INFO")):
                return False
            shapes.add(tuple(self.shape(node)))
        if len(shapes) != 1:
            return False
        (shape,) = shapes
        live_ports = {n.port for n in live}
        if sum(last - first + 1 for first, last, _, _ in shape) != SLOTS:
            return False
        if any(primary not in live_ports or not replicas for _, _, primary, replicas in shape):
            return False
        for node in live:
            info = _admin(node, "INFO", "replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def shape(self, node: EmbeddedRedis | None = None) -> Shape:
        """The slot map as ``node`` (default: a live one) sees it in CLUSTER NODES, sorted:
        the primaries that serve slots, each with its replicas not marked failed. (CLUSTER
        SLOTS is no help here: Valkey leaves out a replica whose replication offset is
        still 0, as it is on an empty cluster.)"""
        node = node or self._live()
        rows = [line.split() for line in str(_admin(node, "CLUSTER", "NODES")).strip().splitlines()]
        port = {row[0]: int(row[1].split("@")[0].rpartition(":")[2]) for row in rows}
        replicas: dict[str, list[int]] = {}
        for row in rows:
            if "slave" in row[2].split(",") and "fail" not in row[2].split(","):
                replicas.setdefault(row[3], []).append(port[row[0]])
        out: Shape = []
        for row in rows:
            for part in row[8:]:
                if part.startswith("["):  # a slot being migrated
                    continue
                first, _, last = part.partition("-")
                out.append(
                    (int(first), int(last or first), port[row[0]], tuple(sorted(replicas.get(row[0], []))))
                )
        return sorted(out)

    def node_of_slot(self, slot: int) -> EmbeddedRedis:
        """The primary serving ``slot`` now."""
        for first, last, primary, _ in self.shape():
            if first <= slot <= last:
                return self._by_port(primary)
        raise LookupError(f"slot {slot} is not served")

    def primaries(self) -> list[EmbeddedRedis]:
        return [self._by_port(p) for p in sorted({p for _, _, p, _ in self.shape()})]

    def replicas(self) -> list[EmbeddedRedis]:
        return [self._by_port(r) for r in sorted({r for *_, rs in self.shape() for r in rs})]

    def replica_of(self, primary: EmbeddedRedis) -> EmbeddedRedis:
        for _, _, p, replicas in self.shape():
            if p == primary.port and replicas:
                return self._by_port(replicas[0])
        raise LookupError(f"{primary.url} has no replica")

    def prefix_away_from(self, node: EmbeddedRedis) -> str:
        """A fresh key prefix whose slot ``node`` does not serve: a client given
        ``node``'s URL reaches the prefix's keys only by following MOVED."""
        while True:
            prefix = f"t{uuid.uuid4().hex[:12]}"
            if self.node_of_slot(key_slot(prefix.encode())) is not node:
                return prefix

    def wait_replicated(self, primary: EmbeddedRedis, timeout_s: float = 10.0) -> None:
        """Until every replica of ``primary`` has all it wrote (its offset reached)."""

        def caught_up() -> bool:
            offset = int(_admin(primary, "INFO", "replication")["master_repl_offset"])
            replicas = [n for _, _, p, rs in self.shape() if p == primary.port for n in rs]
            return all(
                int(_admin(self._by_port(r), "INFO", "replication")["slave_repl_offset"]) >= offset
                for r in replicas
            )

        _wait(time.monotonic() + timeout_s, f"the replicas of {primary.url} to catch up", caught_up)

    def move_slot(
        self,
        slot: int,
        target: EmbeddedRedis,
        batch: int = 10,
        between: Callable[[], object] | None = None,
    ) -> int:
        """Move ``slot`` from its primary to ``target`` (another primary), as ``redis-cli
        --cluster reshard`` does: IMPORTING on the target, MIGRATING on the source, its keys
        MIGRATEd ``batch`` at a time (``between`` called after each batch), then the slot
        given to the target on the target, the source and every other primary. Returns how
        many keys moved."""
        source = self.node_of_slot(slot)
        if source is target:
            raise ValueError(f"slot {slot} is already on {target.url}")
        _admin(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[source.port])
        _admin(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[target.port])
        moved = 0
        while keys := _admin(source, "CLUSTER", "GETKEYSINSLOT", slot, batch):
            _admin(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if between is not None:
                between()
        others = [p for p in self.primaries() if p is not source and p is not target]
        for node in (target, source, *others):
            _admin(node, "CLUSTER", "SETSLOT", slot, "NODE", self.ids[target.port])
        return moved

    def kill(self, node: EmbeddedRedis) -> None:
        """SIGKILL, as a crash would."""
        node.kill()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()  # all at once: each flushes its AOF and exits
        for node in self.nodes:
            node.stop()

    def _live(self) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.process is not None)

    def _by_port(self, port: int) -> EmbeddedRedis:
        return next(n for n in self.nodes if n.port == port)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bus_port(node: EmbeddedRedis) -> int:
    return int(node.extra_args[node.extra_args.index("--cluster-port") + 1])


def _admin(node: EmbeddedRedis, *args: Any) -> Any:
    """One command on one node (a connection of its own: the nodes answer in microseconds)."""
    with redis.Redis(
        host="127.0.0.1", port=node.port, decode_responses=True, socket_timeout=5, protocol=2
    ) as client:
        return client.execute_command(*args)


def _wait(deadline: float, what: str, done: Any) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test cluster never reached {what}")
        time.sleep(0.02)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Run a local cluster in the foreground until Ctrl-C (scripts/cluster)."""
    parser = argparse.ArgumentParser(description="A local Redis Cluster, as the tests start it")
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eventstream-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp), args.primaries, args.replicas, fsync="everysec")
        # SIGTERM stops it as Ctrl-C does (the nodes are in sessions of their own), and
        # so does SIGINT even when started in the background (where it is ignored)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        with cluster:
            for node in cluster.nodes:
                role = "primary" if node in cluster.primaries() else "replica"
                print(f"{role:8} {node.url}  ({node.data_dir})")
            print(f"\nexport EVENTSTREAM_REDIS_URL={cluster.url}\n\nCtrl-C stops the cluster.", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                print("stopping the cluster")


if __name__ == "__main__":
    main()
