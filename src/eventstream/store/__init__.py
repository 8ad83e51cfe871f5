"""The processed-event store: the lasting record of what was processed.

``create_store(url)`` returns a Store for any SQLAlchemy async URL: SQLite
(``sqlite+aiosqlite://``, the embedded default) or PostgreSQL
(``postgresql+asyncpg://``, driver imported only when used).
"""

from eventstream.store.sql import ProcessedRow, SqlStore, create_store

__all__ = ["ProcessedRow", "SqlStore", "create_store"]
