"""Initial schema: catalogue, predictions, model registry, event ledger, search log, training runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Self-contained on purpose (no imports from shared.db.models): a migration describes the schema at its point
in history. Every default and index predicate here is portable between PostgreSQL and SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
SERVING = "state = 'serving'"
ACTIVE_RUN = "state IN ('queued', 'running', 'evaluating', 'reindexing')"


def _timestamp(name: str, *, nullable: bool = False, now: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable,
                     server_default=sa.func.now() if now else None)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("brand", sa.String(256), nullable=True),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("in_stock", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("category", sa.String(128), nullable=True, comment="predicted by the attribute service"),
        sa.Column("attributes", JSON, nullable=False, comment="predicted attribute names"),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        _timestamp("deleted_at", nullable=True, now=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_products")),
    )
    op.create_table(
        "images",
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("domain", sa.String(16), server_default="shop", nullable=False),
        _timestamp("created_at"),
        sa.CheckConstraint("domain IN ('shop', 'consumer')", name=op.f("ck_images_domain")),
        sa.ForeignKeyConstraint(["product_id"], ["products.product_id"], ondelete="CASCADE",
                                name=op.f("fk_images_product_id_products")),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_images")),
    )
    op.create_index(op.f("ix_images_product_id"), "images", ["product_id"])
    op.create_table(
        "image_predictions",
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("category", sa.String(128), nullable=True),
        sa.Column("category_score", sa.Double(), nullable=True),
        sa.Column("attributes", JSON, nullable=False, comment="attribute name -> score"),
        sa.Column("landmarks", JSON, nullable=False, comment="[{name, x, y, visibility}], x/y in [0, 1]"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["image_id"], ["images.image_id"], ondelete="CASCADE",
                                name=op.f("fk_image_predictions_image_id_images")),
        sa.PrimaryKeyConstraint("image_id", "model_version", name=op.f("pk_image_predictions")),
    )
    op.create_index(op.f("ix_image_predictions_model_version"), "image_predictions", ["model_version"])
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("architecture", sa.String(128), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("collection_name", sa.String(256), nullable=True),
        sa.Column("state", sa.String(16), server_default="registered", nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("parent_version", sa.String(128), nullable=True),
        _timestamp("created_at"),
        _timestamp("promoted_at", nullable=True, now=False),
        sa.CheckConstraint("state IN ('registered', 'candidate', 'serving', 'retired', 'rejected')",
                           name=op.f("ck_model_versions_state")),
        sa.ForeignKeyConstraint(["parent_version"], ["model_versions.version"], ondelete="SET NULL",
                                name=op.f("fk_model_versions_parent_version_model_versions")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_index("uq_model_versions_one_serving", "model_versions", ["state"], unique=True,
                    postgresql_where=sa.text(SERVING), sqlite_where=sa.text(SERVING))
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        _timestamp("processed_at"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )
    op.create_table(
        "search_queries",
        sa.Column("query_id", sa.String(36), nullable=False),
        _timestamp("created_at"),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("query_image", sa.LargeBinary(), nullable=True, comment="null when the query was by product id"),
        sa.Column("query_image_sha256", sa.String(64), nullable=True),
        sa.Column("source_product_id", sa.String(128), nullable=True),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("query_id", name=op.f("pk_search_queries")),
    )
    op.create_index(op.f("ix_search_queries_created_at"), "search_queries", ["created_at"])
    op.create_index(op.f("ix_search_queries_query_image_sha256"), "search_queries", ["query_image_sha256"])
    op.create_table(
        "impressions",
        sa.Column("query_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("image_id", sa.String(128), nullable=True),
        sa.Column("score", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["search_queries.query_id"], ondelete="CASCADE",
                                name=op.f("fk_impressions_query_id_search_queries")),
        sa.PrimaryKeyConstraint("query_id", "position", name=op.f("pk_impressions")),
    )
    op.create_table(
        "clicks",
        sa.Column("click_id", sa.String(128), nullable=False),
        sa.Column("query_id", sa.String(36), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        _timestamp("clicked_at"),
        sa.ForeignKeyConstraint(["query_id"], ["search_queries.query_id"], ondelete="CASCADE",
                                name=op.f("fk_clicks_query_id_search_queries")),
        sa.PrimaryKeyConstraint("click_id", name=op.f("pk_clicks")),
        sa.UniqueConstraint("query_id", "product_id", name=op.f("uq_clicks_query_id_product_id")),
    )
    op.create_index(op.f("ix_clicks_clicked_at"), "clicks", ["clicked_at"])
    op.create_table(
        "training_runs",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("dedup_key", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), server_default="queued", nullable=False),
        sa.Column("epoch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("epochs", sa.Integer(), server_default="0", nullable=False),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("params", JSON, nullable=False, comment="the trigger's training settings"),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("base_version", sa.String(128), nullable=True, comment="the model it fine-tunes"),
        sa.Column("candidate_version", sa.String(128), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("heartbeat_at", nullable=True, now=False),
        _timestamp("finished_at", nullable=True, now=False),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'evaluating', 'reindexing', 'promoted', 'rejected', 'failed')",
            name=op.f("ck_training_runs_state")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_training_runs")),
    )
    op.create_index(op.f("ix_training_runs_state"), "training_runs", ["state"])
    op.create_index("uq_training_runs_active_dedup_key", "training_runs", ["dedup_key"], unique=True,
                    postgresql_where=sa.text(ACTIVE_RUN), sqlite_where=sa.text(ACTIVE_RUN))


def downgrade() -> None:
    for table in ("training_runs", "clicks", "impressions", "search_queries", "processed_events",
                  "model_versions", "image_predictions", "images", "products"):
        op.drop_table(table)  # drops its indexes and constraints with it
