"""Key layout: one hash tag per deployment, prefix validation, hashed idempotency keys."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from eventstream.broker.keys import GROUP, Keys, Layout, idem_digest


def test_every_key_shares_the_hash_tag() -> None:
    k = Keys("shop")
    assert k.tag == "{shop}"
    names = [*k.all_static(), k.idem("abc")]
    assert all(name.startswith("{shop}:") for name in names)
    assert len(set(names)) == len(names)
    assert k.stream == "{shop}:stream"
    assert k.retry_body == "{shop}:retry:body"
    assert GROUP == "workers"


def _slot_tag(key: str) -> str:
    """The part Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    end = key.index("}", start + 1)
    return key[start + 1 : end]


@pytest.mark.parametrize("prefix", ["a", "eventstream", "A-b_c.d:e", "x" * 64, "0"])
def test_valid_prefixes_and_cluster_slot(prefix: str) -> None:
    k = Keys(prefix)
    assert k.prefix == prefix
    assert {_slot_tag(n) for n in [*k.all_static(), k.idem("{evil}")]} == {prefix}


@pytest.mark.parametrize("prefix", ["", "x" * 65, "has space", "{brace}", "a}b", "a/b", "ünï", "a\n"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        Keys(prefix)


@pytest.mark.parametrize("client_key", ["order-1", "{shop}:stream", "a" * 256, "ünïcødé ✓", "x\ny", "*", ""])
def test_idempotency_key_is_hashed(client_key: str) -> None:
    k = Keys("p")
    name = k.idem(client_key)
    digest = name.removeprefix("{p}:idem:")
    assert len(digest) == 32
    assert all(c in "0123456789abcdef" for c in digest)
    if client_key:
        assert client_key not in name
    assert k.idem(client_key) == name  # stable


@pytest.mark.parametrize("client_key", ["order-1", "{shop}:stream", "a" * 256, "ünïcødé ✓", "x\ny", "*", ""])
def test_a_dedupe_record_is_named_by_the_keys_digest(client_key: str) -> None:
    k = Keys("p")
    digest = k.idem(client_key).removeprefix("{p}:idem:")
    record = k.dedupe(client_key)
    # one of 4,096 hashes by the digest's first 3 hex digits; its next 24 as the field
    assert record.hash == "{p}:dedupe:" + digest[:3]
    assert record.field == bytes.fromhex(digest[3:27])
    assert k.dedupe(client_key) == record  # stable


def test_distinct_keys_and_prefixes_give_distinct_names() -> None:
    k = Keys("p")
    names = {k.idem(f"key-{i}") for i in range(1000)}
    assert len(names) == 1000
    assert Keys("p").idem("same") != Keys("q").idem("same")
    assert Keys("p").idem("same").split(":")[-1] == Keys("q").idem("same").split(":")[-1]


# ---- partitions ----------------------------------------------------------------------


def test_one_partition_keeps_the_names_of_a_deployment_made_before_partitions() -> None:
    layout = Layout("shop", 1)
    [part] = layout.parts
    assert part.stream == "{shop}:stream"
    assert part.idem("k") == Keys("shop").idem("k")
    assert layout.deployment.tag == part.tag == "{shop}"
    assert layout.partition_of(idem_digest("any", None)) == 0


@pytest.mark.parametrize("n", [2, 3, 12, 256])
def test_partition_slots_spread_evenly_over_the_slot_space(n: int) -> None:
    layout = Layout("eventstream", n)
    slots = [key_slot(p.stream.encode()) for p in layout.parts]
    # partition p hashes into the p-th n-th of the slots: a cluster whose primaries own even
    # slot ranges (as redis-cli --cluster create makes them) gets n / primaries each
    for p, slot in enumerate(slots):
        assert p * 16384 // n <= slot < (p + 1) * 16384 // n, (p, slot)
    # {eventstream#p} or {eventstream#p.i}: the partition's number, then what moves its slot
    for i, part in enumerate(layout.parts):
        assert re.fullmatch(rf"\{{eventstream#{i}(\.\d+)?\}}", part.tag), part.tag
    # the deployment's own keys keep the plain tag
    assert layout.deployment.tag == "{eventstream}"
    assert layout.deployment.partitions == "{eventstream}:partitions"


def test_every_key_of_one_partition_is_in_one_slot() -> None:
    for part in Layout("shop", 12).parts:
        names = [*part.all_static(), part.idem("k"), part.idem("k", "key:abc")]
        assert {_slot_tag(n) for n in names} == {part.tag[1:-1]}
        assert len({key_slot(n.encode()) for n in names}) == 1


def test_no_prefix_names_another_deployments_partition() -> None:
    # '#' is not allowed in a prefix, and every partition tag holds one
    for part in Layout("a", 12).parts:
        with pytest.raises(ValueError, match="key prefix"):
            Keys(part.tag[1:-1])


def test_an_idempotency_key_always_routes_to_one_partition() -> None:
    layout = Layout("shop", 12)
    digests = [idem_digest(f"order-{i}", None) for i in range(1200)]
    chosen = [layout.partition_of(d) for d in digests]
    assert chosen == [Layout("shop", 12).partition_of(d) for d in digests]  # any process agrees
    counts = [chosen.count(p) for p in range(12)]
    assert min(counts) > 50, counts  # 100 each on average: none starved
    # the namespace is part of the digest: one client key of two API keys may differ
    assert idem_digest("k", "key:aaaaaaaaaaaa") != idem_digest("k", None)


@pytest.mark.parametrize("n", [0, 257])
def test_partition_count_is_bounded(n: int) -> None:
    with pytest.raises(ValueError, match="partitions must be 1-256"):
        Layout("shop", n)


# Every key Keys can name, by member: a new member must be added here (the test below
# fails until it is), so that the one-slot check covers it.
def every_key(k: Keys) -> dict[str, list[str]]:
    return {
        **{name: [getattr(k, name)] for name in Keys.__slots__ if name not in ("prefix", "tag")},
        "all_static": k.all_static(),
        "idem": [k.idem("order-1"), k.idem("order-1", "key:0123456789ab"), k.idem("{other}")],
        "idem_of": [k.idem_of("0123456789abcdef0123456789abcdef")],
        "dedupe": [
            k.dedupe("order-1").hash,
            k.dedupe("order-1", "key:0123456789ab").hash,
            k.dedupe("{x}").hash,
        ],
        "dedupe_of": [k.dedupe_of("0123456789abcdef0123456789abcdef").hash],
        "api_key": [k.api_key("0123456789ab")],
        "key_bucket": [k.key_bucket("0123456789ab")],
        "addr_bucket": [k.addr_bucket("203.0.113.9")],
        "lease": [k.lease("retention"), k.lease("{other}")],
        "ui_session": [k.ui_session("ab" * 32)],
        "ordering": list(k.ordering),
    }


def test_every_member_of_keys_is_checked_for_its_slot() -> None:
    public = {name for name in dir(Keys) if not name.startswith("_")} - {"prefix", "tag"}
    assert public == set(every_key(Keys("shop"))), "add the new member to every_key"


@pytest.mark.parametrize("prefix", ["a", "eventstream", "A-b_c.d:e", "x" * 64, "t0123456789ab"])
def test_every_key_of_a_prefix_hashes_to_one_cluster_slot(prefix: str) -> None:
    """Redis Cluster runs a script only when all its KEYS are in one slot (CROSSSLOT
    otherwise): every script call of a deployment names keys of Keys(prefix) only."""
    names = [name for keys in every_key(Keys(prefix)).values() for name in keys]
    assert {key_slot(name.encode()) for name in names} == {key_slot(prefix.encode())}
