"""Catalogue events: the newest applied ``occurred_at`` per product (older events are then ignored), and the
outbox of ``catalog.indexed`` announcements (written with the event claim, sent by a relay).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Existing products get no ``event_occurred_at`` (NULL): the first event carrying one applies whatever its time.
Downgrading drops the column and the outbox; announcements still pending then are lost, so relay them first
(the ingest workers do within a sweep period).

Self-contained like 0001 (no imports from shared.db.models): it describes the schema at this point in history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOX = "indexed_announcements"
PENDING = "sent_at IS NULL"
ORDER_COMMENT = "occurred_at of the newest catalogue event applied; older events are ignored"


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("event_occurred_at", sa.DateTime(timezone=True), nullable=True,
                                   comment=ORDER_COMMENT))
    op.create_table(
        OUTBOX,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_indexed_announcements")),
        sa.UniqueConstraint("event_id", name=op.f("uq_indexed_announcements_event_id")),
    )
    op.create_index("ix_indexed_announcements_pending", OUTBOX, ["id"], postgresql_where=sa.text(PENDING),
                    sqlite_where=sa.text(PENDING))


def downgrade() -> None:
    op.drop_table(OUTBOX)  # its index and constraints go with it
    with op.batch_alter_table("products") as batch:
        batch.drop_column("event_occurred_at")
