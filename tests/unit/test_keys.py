"""Key layout: one hash tag per deployment, prefix validation, hashed idempotency keys."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from eventstream.broker.keys import GROUP, Keys


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


def test_distinct_keys_and_prefixes_give_distinct_names() -> None:
    k = Keys("p")
    names = {k.idem(f"key-{i}") for i in range(1000)}
    assert len(names) == 1000
    assert Keys("p").idem("same") != Keys("q").idem("same")
    assert Keys("p").idem("same").split(":")[-1] == Keys("q").idem("same").split(":")[-1]


# Every key Keys can name, by member: a new member must be added here (the test below
# fails until it is), so that the one-slot check covers it.
def every_key(k: Keys) -> dict[str, list[str]]:
    return {
        **{name: [getattr(k, name)] for name in Keys.__slots__ if name not in ("prefix", "tag")},
        "all_static": k.all_static(),
        "idem": [k.idem("order-1"), k.idem("order-1", "key:0123456789ab"), k.idem("{other}")],
        "api_key": [k.api_key("0123456789ab")],
        "key_bucket": [k.key_bucket("0123456789ab")],
        "addr_bucket": [k.addr_bucket("203.0.113.9")],
        "lease": [k.lease("retention"), k.lease("{other}")],
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
