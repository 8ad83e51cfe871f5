"""Follow-ups (Event.emit): each processed event's parent (``causation_id``) and the ids
of the follow-ups it emitted (``children``, a JSON list): nullable columns, so existing
rows keep none.

A table made by ``metadata.create_all`` may have the columns already: they are then left
as they are.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "eventstream_events"


def upgrade() -> None:
    columns = {str(c["name"]) for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    with op.batch_alter_table(TABLE) as batch:  # SQLite adds nullable columns in place
        if "causation_id" not in columns:
            batch.add_column(sa.Column("causation_id", sa.String(64), nullable=True))
        if "children" not in columns:
            batch.add_column(sa.Column("children", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column("children")
        batch.drop_column("causation_id")
