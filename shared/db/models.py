"""Relational schema: SQLAlchemy 2.0 typed models, one ``DeclarativeBase`` with a constraint naming convention.

The same models run on PostgreSQL (production, CI) and SQLite (the no-server local fallback); every
portable choice below exists for that reason:

- JSON columns are ``JSON`` everywhere and ``JSONB`` on Postgres (indexable, compact).
- Enumerations are ``VARCHAR`` + a named ``CHECK`` constraint, not native Postgres enums, so migrations add
  a state by rewriting one constraint instead of ``ALTER TYPE`` and SQLite gets the same guard.
- Times are stored in UTC and always come back timezone-aware (:class:`UTCDateTime`), also from SQLite.
- "Exactly one serving model" and "one active training run per key" are partial unique indexes, which
  both databases enforce, so concurrent writers cannot break them even when application checks race.

Landmarks and attribute scores live as JSON in one ``image_predictions`` row per (image, model version),
not as one row per landmark: they are always written and read as a whole set (8 landmarks, a score per
attribute), never queried by landmark name, and a single row makes a replayed event an idempotent
``INSERT ... ON CONFLICT DO UPDATE`` of the whole prediction instead of delete-then-insert of 8+ rows.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON on SQLite, JSONB on Postgres. The migrations spell the same type out (they must not import models).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always returns aware UTC datetimes.

    SQLite keeps no offset, so values are normalised to UTC on the way in (naive ones are taken as UTC)
    and tagged UTC on the way out; string comparison in SQLite then orders them correctly.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ImageDomain(enum.StrEnum):
    SHOP = "shop"
    CONSUMER = "consumer"


class ModelState(enum.StrEnum):
    REGISTERED = "registered"
    CANDIDATE = "candidate"
    SERVING = "serving"
    RETIRED = "retired"
    REJECTED = "rejected"


class RunState(enum.StrEnum):
    """Where a training run is. The API (admin.proto) spells states exactly like this: no mapping between them."""

    QUEUED = "queued"
    TRAINING = "training"
    EVALUATING = "evaluating"
    REINDEXING = "reindexing"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"


# Every legal move of a training run; `repository.move_run` refuses the rest. Who makes each move:
#   (insert)   -> queued       the trigger (admin), one active run per key
#   queued     -> training     the retrain worker starts it
#   training   -> training     an epoch ended, or a redelivered task (its worker died) resumes from last.pt
#   evaluating -> training     a task redelivered mid-evaluation trains on from last.pt and evaluates again
#   training   -> evaluating   fine-tuning finished
#   evaluating -> reindexing   the gate accepted the candidate: the promotion worker takes the run over
#   evaluating -> rejected     the gate rejected it
#   reindexing -> promoted     the candidate was re-indexed and now serves
#   any active -> failed       bad data, a broken checkpoint, retries exhausted, an enqueue the broker refused
# Terminal states have no way out: a later trigger creates a new run.
RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.TRAINING, RunState.FAILED}),
    RunState.TRAINING: frozenset({RunState.TRAINING, RunState.EVALUATING, RunState.FAILED}),
    RunState.EVALUATING: frozenset({RunState.TRAINING, RunState.REINDEXING, RunState.REJECTED, RunState.FAILED}),
    RunState.REINDEXING: frozenset({RunState.PROMOTED, RunState.FAILED}),
    RunState.PROMOTED: frozenset(),
    RunState.REJECTED: frozenset(),
    RunState.FAILED: frozenset(),
}
TERMINAL_RUN_STATES: tuple[RunState, ...] = tuple(s for s in RunState if not RUN_TRANSITIONS[s])
ACTIVE_RUN_STATES: tuple[RunState, ...] = tuple(s for s in RunState if RUN_TRANSITIONS[s])
# States in which a retrain worker owns the run (queued, training, evaluating: those that may move to "training");
# its heartbeat says it is alive. Later states belong to evaluation's outcome or to promotion.
TRAINING_RUN_STATES: tuple[RunState, ...] = tuple(s for s in RunState if RunState.TRAINING in RUN_TRANSITIONS[s])


def _in_list(column: str, values: type[enum.StrEnum] | tuple[enum.StrEnum, ...]) -> str:
    """SQL text ``column IN ('a', 'b')`` for CHECK constraints and partial-index predicates."""
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


ACTIVE_RUN_PREDICATE = _in_list("state", ACTIVE_RUN_STATES)
SERVING_PREDICATE = f"state = '{ModelState.SERVING}'"


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class Product(Base):
    """A catalogue item, keyed by the store's own product id (the Kafka message key)."""

    __tablename__ = "products"

    product_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(512))
    brand: Mapped[str | None] = mapped_column(sa.String(256))
    price: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    in_stock: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    category: Mapped[str | None] = mapped_column(sa.String(128), comment="predicted by the attribute service")
    attributes: Mapped[list[Any]] = mapped_column(default=list, comment="predicted attribute names")
    deleted: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    deleted_at: Mapped[datetime | None]
    # Producers partitioning by another hash than ours deliver one product's events on several partitions, out
    # of order: the newest event applied is remembered so that an older one arriving later changes nothing.
    event_occurred_at: Mapped[datetime | None] = mapped_column(
        comment="occurred_at of the newest catalogue event applied; older events are ignored")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), onupdate=utcnow)


class Image(Base):
    """One photo of a product; ``image_id`` is deterministic (computed by the caller) so replays converge."""

    __tablename__ = "images"
    __table_args__ = (sa.CheckConstraint(_in_list("domain", ImageDomain), name="domain"),)

    image_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    product_id: Mapped[str] = mapped_column(
        sa.ForeignKey("products.product_id", ondelete="CASCADE"), index=True)
    uri: Mapped[str | None] = mapped_column(sa.Text)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    domain: Mapped[str] = mapped_column(sa.String(16), default=ImageDomain.SHOP.value,
                                        server_default=ImageDomain.SHOP.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


class ImagePrediction(Base):
    """What one model version saw in one image: category, attribute scores and landmarks (see module doc)."""

    __tablename__ = "image_predictions"

    image_id: Mapped[str] = mapped_column(sa.ForeignKey("images.image_id", ondelete="CASCADE"), primary_key=True)
    model_version: Mapped[str] = mapped_column(sa.String(128), primary_key=True, index=True)
    category: Mapped[str | None] = mapped_column(sa.String(128))
    category_score: Mapped[float | None]
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="attribute name -> score")
    landmarks: Mapped[list[Any]] = mapped_column(default=list,
                                                 comment="[{name, x, y, visibility}], x/y in [0, 1]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), onupdate=utcnow)


class ModelVersion(Base):
    """The model registry. At most one row is ``serving`` (partial unique index)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.CheckConstraint(_in_list("state", ModelState), name="state"),
        sa.Index("uq_model_versions_one_serving", "state", unique=True,
                 postgresql_where=sa.text(SERVING_PREDICATE), sqlite_where=sa.text(SERVING_PREDICATE)),
    )

    version: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    architecture: Mapped[str] = mapped_column(sa.String(128))
    checkpoint_path: Mapped[str] = mapped_column(sa.Text)
    embedding_dim: Mapped[int]
    collection_name: Mapped[str | None] = mapped_column(sa.String(256))
    state: Mapped[str] = mapped_column(sa.String(16), default=ModelState.REGISTERED.value,
                                       server_default=ModelState.REGISTERED.value)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_version: Mapped[str | None] = mapped_column(
        sa.ForeignKey("model_versions.version", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    promoted_at: Mapped[datetime | None]


class ProcessedEvent(Base):
    """Kafka events already applied: the idempotency ledger of at-least-once consumers."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    topic: Mapped[str] = mapped_column(sa.String(256))
    partition: Mapped[int]
    offset: Mapped[int] = mapped_column(sa.BigInteger)
    processed_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())


# SQLite makes only an INTEGER primary key an auto-incrementing rowid.
BigSerial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING_PREDICATE = "sent_at IS NULL"


class IndexedAnnouncement(Base):
    """The outbox of ``catalog.indexed``: one row per indexed upsert, written in the transaction that claims
    its event, so an announcement survives a crash between that commit and the send. ``sent_at`` is set once
    Kafka acknowledged it; pending rows are sent in ``id`` order (a partial index keeps finding them cheap)."""

    __tablename__ = "indexed_announcements"
    __table_args__ = (
        sa.Index("ix_indexed_announcements_pending", "id", postgresql_where=sa.text(PENDING_PREDICATE),
                 sqlite_where=sa.text(PENDING_PREDICATE)),
    )

    id: Mapped[int] = mapped_column(BigSerial, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(256), unique=True)
    product_id: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[str] = mapped_column(sa.String(128))
    images: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    sent_at: Mapped[datetime | None]


class SearchQuery(Base):
    """One FindSimilar call, with the shopper's photo kept as training data for retraining."""

    __tablename__ = "search_queries"

    query_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)
    model_version: Mapped[str] = mapped_column(sa.String(128))
    query_image: Mapped[bytes | None] = mapped_column(sa.LargeBinary, deferred=True,
                                                      comment="null when the query was by product id")
    query_image_sha256: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    source_product_id: Mapped[str | None] = mapped_column(sa.String(128))
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    top_k: Mapped[int]


class Impression(Base):
    """A product shown at a position for a query; unique per (query, position)."""

    __tablename__ = "impressions"

    query_id: Mapped[str] = mapped_column(sa.ForeignKey("search_queries.query_id", ondelete="CASCADE"),
                                          primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[str] = mapped_column(sa.String(128))
    image_id: Mapped[str | None] = mapped_column(sa.String(128))
    score: Mapped[float]


class Click(Base):
    """A shopper clicked a shown product; unique per (query, product) so replayed click events are no-ops."""

    __tablename__ = "clicks"
    __table_args__ = (sa.UniqueConstraint("query_id", "product_id"),)

    click_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    query_id: Mapped[str] = mapped_column(sa.ForeignKey("search_queries.query_id", ondelete="CASCADE"))
    product_id: Mapped[str] = mapped_column(sa.String(128))
    position: Mapped[int]
    clicked_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)


class TrainingRun(Base):
    """A retraining job and its visible progress. One active run per ``dedup_key`` (partial unique index).

    ``state`` changes only through ``repository.move_run``, which follows :data:`RUN_TRANSITIONS`.
    """

    __tablename__ = "training_runs"
    __table_args__ = (
        sa.CheckConstraint(_in_list("state", RunState), name="state"),
        sa.Index("uq_training_runs_active_dedup_key", "dedup_key", unique=True,
                 postgresql_where=sa.text(ACTIVE_RUN_PREDICATE), sqlite_where=sa.text(ACTIVE_RUN_PREDICATE)),
    )

    run_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(sa.String(256))
    state: Mapped[str] = mapped_column(sa.String(16), default=RunState.QUEUED.value,
                                       server_default=RunState.QUEUED.value, index=True)
    epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    epochs: Mapped[int] = mapped_column(default=0, server_default="0")
    loss: Mapped[float | None]
    eta_seconds: Mapped[float | None]
    message: Mapped[str | None] = mapped_column(sa.Text)
    # What the run was asked to do, and what happened along the way, in separate columns: a redelivered task
    # rebuilds its RetrainConfig from `config` alone, and progress notes never pass for settings.
    config: Mapped[dict[str, Any]] = mapped_column(default=dict, comment="the trigger's training settings")
    progress: Mapped[dict[str, Any]] = mapped_column(
        default=dict, comment="notes while it advances: the epoch a resume started from, the re-index cursor")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    base_version: Mapped[str | None] = mapped_column(sa.String(128), comment="the model it fine-tunes")
    candidate_version: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), onupdate=utcnow)
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
