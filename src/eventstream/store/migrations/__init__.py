"""The store's schema migrations (Alembic): scripts in ``versions/``, run by ``migrate``."""

from eventstream.store.migrations.migrate import SchemaState, ensure, head, state, upgrade

__all__ = ["SchemaState", "ensure", "head", "state", "upgrade"]
