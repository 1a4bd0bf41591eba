"""The search log: queries (with the shopper's photo), impressions, clicks, and training pairs from them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Click, Impression, SearchQuery, utcnow
from shared.db.repository._sql import chunks, field, insert_for, insert_rows
from shared.errors import InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class ClickPair:
    """A consumer-to-shop training example: the shopper's photo, the product they clicked, what they skipped."""

    query_id: str
    query_image: bytes
    query_image_sha256: str
    created_at: datetime
    model_version: str
    positive_product_id: str
    negative_product_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueryLogEntry:
    """One FindSimilar call to log: the query (by photo or by product) and what it showed.

    ``impressions``: mappings or objects with ``position``, ``product_id``, ``score`` and optional ``image_id``.
    """

    query_id: str
    model_version: str
    top_k: int
    impressions: Sequence[Any] = ()
    query_image: bytes | None = None
    source_product_id: str | None = None
    filters: Mapping[str, Any] | None = None
    created_at: datetime | None = None


def record_query(
    session: Session,
    query_id: str,
    *,
    model_version: str,
    top_k: int,
    impressions: Iterable[Any],
    query_image: bytes | None = None,
    source_product_id: str | None = None,
    filters: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> bool:
    """Log a FindSimilar call and what it showed; False when ``query_id`` was already logged (a retry)."""
    entry = QueryLogEntry(query_id, model_version, top_k, list(impressions), query_image, source_product_id,
                          filters, created_at)
    return bool(record_queries(session, [entry]))


def record_queries(session: Session, entries: Sequence[QueryLogEntry]) -> set[str]:
    """Log several FindSimilar calls in two statements; returns the query ids that were new (not retries)."""
    queries: list[dict[str, Any]] = []
    impressions: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        queries.append(_query_row(entry))
        impressions[entry.query_id] = _impression_rows(entry)
    if not queries:
        return set()
    # One shape for every row (executemany needs the same columns), the database default otherwise.
    now = utcnow()
    for row in queries:
        row.setdefault("created_at", now)
    # Executemany (see insert_rows): a multi-row VALUES cost 2.4 ms of interpreter time per logged search in
    # batches of 10, taken from the searches in flight; 0.5 ms this way.
    queries_table = SearchQuery.__table__
    new = set(session.scalars(insert_rows(session, SearchQuery).on_conflict_do_nothing()
                              .returning(queries_table.c.query_id), queries))
    rows = [row for query_id in new for row in impressions[query_id]]
    if rows:
        session.execute(insert_rows(session, Impression).on_conflict_do_nothing(), rows)
    return new


def _query_row(entry: QueryLogEntry) -> dict[str, Any]:
    if entry.query_image is None and entry.source_product_id is None:
        raise InvalidInput("expected query_image bytes or a source_product_id for the query")
    if entry.top_k < 1:
        raise InvalidInput(f"expected top_k >= 1, got {entry.top_k}")
    values: dict[str, Any] = {
        "query_id": entry.query_id, "model_version": entry.model_version, "top_k": entry.top_k,
        "query_image": entry.query_image,
        "query_image_sha256": hashlib.sha256(entry.query_image).hexdigest() if entry.query_image is not None
        else None,
        "source_product_id": entry.source_product_id, "filters": dict(entry.filters or {}),
    }
    if entry.created_at is not None:
        values["created_at"] = entry.created_at
    return values


def _impression_rows(entry: QueryLogEntry) -> list[dict[str, Any]]:
    rows = [{"query_id": entry.query_id, "position": int(field(item, "position")),
             "product_id": str(field(item, "product_id")), "image_id": field(item, "image_id", None) or None,
             "score": float(field(item, "score"))} for item in entry.impressions]
    positions = [row["position"] for row in rows]
    if len(set(positions)) != len(positions):
        raise InvalidInput(f"expected distinct impression positions, got {positions}")
    return rows


def get_query(session: Session, query_id: str) -> SearchQuery:
    query = session.get(SearchQuery, query_id)
    if query is None:
        raise NotFound(f"unknown query_id {query_id!r}: expected the query_id returned by FindSimilar")
    return query


def query_impressions(session: Session, query_id: str) -> list[Impression]:
    stmt = sa.select(Impression).where(Impression.query_id == query_id).order_by(Impression.position)
    return list(session.scalars(stmt))


def validate_click(session: Session, query_id: str, product_id: str) -> None:
    """Raise NotFound for an unknown query and InvalidInput for a product that query did not show.

    Also for RecordClick to call before it publishes the click, so bad clicks fail at the API.
    """
    get_query(session, query_id)
    shown = session.scalar(sa.select(sa.func.count()).select_from(Impression)
                           .where(Impression.query_id == query_id, Impression.product_id == product_id))
    if not shown:
        raise InvalidInput(f"product_id {product_id!r} was not shown for query_id {query_id!r}: "
                           "expected one of the products FindSimilar returned for it")


def record_click(
    session: Session,
    click_id: str,
    query_id: str,
    product_id: str,
    position: int,
    *,
    clicked_at: datetime | None = None,
) -> bool:
    """Log a click; False when that click (same id, or same query and product) was already logged."""
    validate_click(session, query_id, product_id)
    values: dict[str, Any] = {"click_id": click_id, "query_id": query_id, "product_id": product_id,
                              "position": position}
    if clicked_at is not None:
        values["clicked_at"] = clicked_at
    stmt = insert_for(session, Click).values(**values).on_conflict_do_nothing().returning(Click.click_id)
    return session.execute(stmt).scalar_one_or_none() is not None


def click_training_pairs(session: Session, since: datetime | None = None) -> list[ClickPair]:
    """Deduplicated (photo, clicked product, skipped products) pairs from photo queries, oldest first.

    The same photo (by sha256) searched several times yields one pair per clicked product, dated by its
    first query. Negatives are the products shown for that photo in any of its queries and never clicked
    for it, in the order they were first shown. Queries by product id carry no shopper photo: left out.
    """
    stmt = (sa.select(SearchQuery.query_id, SearchQuery.query_image_sha256, SearchQuery.created_at,
                      SearchQuery.model_version, Click.product_id)
            .join(Click, Click.query_id == SearchQuery.query_id)
            .where(SearchQuery.query_image.is_not(None))
            .order_by(SearchQuery.created_at, SearchQuery.query_id, Click.clicked_at, Click.click_id))
    if since is not None:
        stmt = stmt.where(SearchQuery.created_at >= since)
    clicks = session.execute(stmt).all()

    positives: dict[str, dict[str, Any]] = {}   # photo -> {product: first click row}, in first-click order
    queries_of_photo: dict[str, list[str]] = {}
    for row in clicks:
        photo = row.query_image_sha256 or row.query_id
        positives.setdefault(photo, {}).setdefault(row.product_id, row)
        photo_queries = queries_of_photo.setdefault(photo, [])
        if row.query_id not in photo_queries:
            photo_queries.append(row.query_id)

    shown: dict[str, list[str]] = {}
    query_ids = [q for qs in queries_of_photo.values() for q in qs]
    for batch in chunks(query_ids):
        for query_id, product_id in session.execute(
                sa.select(Impression.query_id, Impression.product_id).where(Impression.query_id.in_(batch))
                .order_by(Impression.query_id, Impression.position)):
            shown.setdefault(query_id, []).append(product_id)

    first_rows = [row for by_product in positives.values() for row in by_product.values()]
    images: dict[str, bytes] = {}
    for batch in chunks(dict.fromkeys(row.query_id for row in first_rows)):
        images.update(session.execute(sa.select(SearchQuery.query_id, SearchQuery.query_image)
                                      .where(SearchQuery.query_id.in_(batch))).all())

    pairs = []
    for photo, by_product in positives.items():
        seen = [p for q in queries_of_photo[photo] for p in shown.get(q, [])]
        negatives = tuple(p for p in dict.fromkeys(seen) if p not in by_product)
        for product_id, row in by_product.items():
            pairs.append(ClickPair(query_id=row.query_id, query_image=images[row.query_id],
                                   query_image_sha256=row.query_image_sha256 or "", created_at=row.created_at,
                                   model_version=row.model_version, positive_product_id=product_id,
                                   negative_product_ids=negatives))
    pairs.sort(key=lambda pair: (pair.created_at, pair.query_id, pair.positive_product_id))
    return pairs


@dataclass(frozen=True, slots=True)
class PhotoExpiry:
    cleared: int
    bytes_freed: int
    bytes_kept: int


def expire_query_photos(session: Session, *, unclicked_before: datetime, clicked_before: datetime,
                        max_total_bytes: int) -> PhotoExpiry:
    """Drop stored shopper photos by age and total size; the query rows (and their sha256) stay.

    A photo nobody clicked on is no training data: it goes after `unclicked_before`. A clicked one is kept
    until `clicked_before`. If what remains is still over `max_total_bytes`, the oldest go first.
    """
    size = sa.func.length(SearchQuery.query_image)
    clicked = sa.select(Click.query_id).where(Click.query_id == SearchQuery.query_id).exists()
    has_photo = SearchQuery.query_image.is_not(None)
    expired = sa.or_(sa.and_(SearchQuery.created_at < unclicked_before, ~clicked),
                     SearchQuery.created_at < clicked_before)
    cleared, freed = session.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(size), 0))
                                     .where(has_photo, expired)).one()
    if cleared:
        session.execute(sa.update(SearchQuery).where(has_photo, expired).values(query_image=None)
                        .execution_options(synchronize_session=False))
    kept = int(session.execute(sa.select(sa.func.coalesce(sa.func.sum(size), 0)).where(has_photo)).scalar_one())
    if kept > max_total_bytes:
        over, ids = kept - max_total_bytes, []
        for query_id, nbytes in session.execute(sa.select(SearchQuery.query_id, size).where(has_photo)
                                                .order_by(SearchQuery.created_at, SearchQuery.query_id)):
            if over <= 0:
                break
            ids.append(query_id)
            over -= int(nbytes)
            freed += int(nbytes)
        for batch in chunks(ids):
            session.execute(sa.update(SearchQuery).where(SearchQuery.query_id.in_(batch)).values(query_image=None)
                            .execution_options(synchronize_session=False))
        cleared += len(ids)
        kept = int(session.execute(sa.select(sa.func.coalesce(sa.func.sum(size), 0)).where(has_photo)).scalar_one())
    return PhotoExpiry(int(cleared), int(freed), kept)
