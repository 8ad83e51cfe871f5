"""The ordering key of each processed event: a nullable column, so existing rows keep theirs (none).

A table made by ``metadata.create_all`` (before migrations existed, adopted by 0001)
may have the column already: it is then left as it is.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "eventstream_events"
COLUMN = "ordering_key"


def upgrade() -> None:
    columns = {str(c["name"]) for c in sa.inspect(op.get_bind()).get_columns(TABLE)}
    if COLUMN in columns:
        return
    with op.batch_alter_table(TABLE) as batch:  # SQLite adds a nullable column in place
        batch.add_column(sa.Column(COLUMN, sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column(COLUMN)
