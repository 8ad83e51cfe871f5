"""Alembic environment: runs on the connection EventStream hands over (see ``migrate``).

EventStream runs its migrations itself (``eventstream db upgrade``, or at start for
the embedded SQLite store); there is no alembic.ini. The connection arrives in
``config.attributes["connection"]``, already inside the transaction that holds the
migration lock, so the whole upgrade commits or rolls back as one.
"""

from __future__ import annotations

from alembic import context

from eventstream.store.migrations.migrate import VERSION_TABLE
from eventstream.store.sql import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run EventStream's migrations with `eventstream db upgrade`, not the alembic command")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
with context.begin_transaction():
    context.run_migrations()
