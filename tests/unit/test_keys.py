"""Key layout: one hash tag per deployment, prefix validation, hashed idempotency keys."""

from __future__ import annotations

import pytest

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
