"""Retention tests drive the real app, like tests/api, and the store on both backends
(``sql_store``: SQLite in tmp, or the session's PostgreSQL database; see tests/store)."""

from tests.api.conftest import api, make_api
from tests.store.conftest import postgres_url, sql_store, store_url

__all__ = ["api", "make_api", "postgres_url", "sql_store", "store_url"]
