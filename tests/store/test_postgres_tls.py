"""PostgreSQL TLS is asyncpg's ``ssl`` query parameter of EVENTSTREAM_DATABASE_URL: the
store passes it through untouched. The local server speaks no TLS, so ``disable`` and
``prefer`` work on it and ``require`` or ``verify-full`` (its CA bundle named by
PGSSLROOTCERT) fail at once, as ``StoreUnavailable`` with asyncpg's words (the
managed-service set-up is in docs/guides/deployment.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstream.errors import ConfigError, StoreUnavailable
from eventstream.store import create_store
from tests.support.tls import make_pki


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_a_url_with_an_ssl_mode_the_server_allows_works(postgres_url: str, mode: str) -> None:
    store = create_store(f"{postgres_url}?ssl={mode}")
    try:
        await store.ensure_schema(auto_upgrade=True)
        await store.ping()
        assert await store.count() >= 0
    finally:
        await store.close()


async def refused(url: str) -> str:
    store = create_store(url)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.ping()
    finally:
        await store.close()
    message = str(caught.value)
    assert message.startswith("cannot reach the store: ")
    assert "\n" not in message
    return message


async def test_tls_required_of_a_server_without_it_is_refused_clearly(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "rejected SSL upgrade" in await refused(f"{postgres_url}?ssl=require")
    monkeypatch.setenv("PGSSLROOTCERT", str(make_pki(tmp_path).ca))
    assert "rejected SSL upgrade" in await refused(f"{postgres_url}?ssl=verify-full")


async def test_verify_full_names_a_missing_ca_bundle(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # asyncpg's default: ~/.postgresql/root.crt
    message = await refused(f"{postgres_url}?ssl=verify-full")
    assert f'root certificate file "{tmp_path}/.postgresql/root.crt" does not exist' in message


@pytest.mark.parametrize(
    "url",
    ["postgresql+nodriver://app:s3cret@db/es", "postgresql+asyncpg://app:s3cret@db:port/es?ssl=require"],
)
def test_a_url_refused_at_start_is_shown_without_its_password(url: str) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot use database URL 'postgresql\+\w+://app:\*\*\*@db"
    ) as caught:
        create_store(url)
    assert "s3cret" not in str(caught.value)
