"""The processed-event table and its two keyset indexes.

A database created before migrations existed (by ``metadata.create_all``) already
has them: this revision then only records itself, so such a store is adopted as is.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "eventstream_events"
INDEXES = {
    "ix_eventstream_events_processed": ["processed_at_ms", "id"],
    "ix_eventstream_events_type_processed": ["type", "processed_at_ms", "id"],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(TABLE):
        op.create_table(
            TABLE,
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("type", sa.String(128), nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("source", sa.String(256)),
            sa.Column("severity", sa.String(32)),
            sa.Column("timestamp", sa.String(64)),
            sa.Column("idempotency_key", sa.String(256)),
            sa.Column("replay_of", sa.String(64)),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("received_at_ms", sa.BigInteger, nullable=False),
            sa.Column("processed_at_ms", sa.BigInteger, nullable=False),
        )
        existing: set[str] = set()
    else:
        existing = {str(ix["name"]) for ix in inspector.get_indexes(TABLE)}
    for name, columns in INDEXES.items():
        if name not in existing:
            op.create_index(name, TABLE, columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name=TABLE)
    op.drop_table(TABLE)
