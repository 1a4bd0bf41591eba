"""The outbox of ``catalog.indexed``: announcements written with the event claim, sent later by a relay.

Rows are ``IndexedAnnouncement``; ``sent_at`` marks the ones Kafka acknowledged. Delivery is at least once: a
row sent but not yet marked when its sender died is sent again, so consumers of ``catalog.indexed`` must
tolerate a duplicate (the message names its event id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import IndexedAnnouncement, utcnow
from shared.db.repository._sql import chunks, insert_rows


def add_announcements(session: Session, announcements: Sequence[Mapping[str, Any]]) -> None:
    """Queue announcements (mappings with ``event_id``, ``product_id``, ``model_version``, ``images``), in the
    transaction that claims their events. An event id queued before is left as it was."""
    rows = [{"event_id": a["event_id"], "product_id": a["product_id"], "model_version": a["model_version"],
             "images": int(a["images"])} for a in announcements]
    if rows:
        session.execute(insert_rows(session, IndexedAnnouncement).on_conflict_do_nothing(), rows)


def pending_announcements(session: Session, *, created_before: datetime | None = None,
                          limit: int = 500) -> list[IndexedAnnouncement]:
    """Unsent announcements, oldest first, locked until the transaction ends; rows another transaction holds
    are skipped (Postgres), so two sweeping workers split the leftovers instead of both sending them.
    ``created_before`` leaves out the rows a live worker may still be sending itself."""
    stmt = sa.select(IndexedAnnouncement).where(IndexedAnnouncement.sent_at.is_(None))
    if created_before is not None:
        stmt = stmt.where(IndexedAnnouncement.created_at < created_before)
    stmt = stmt.order_by(IndexedAnnouncement.id).limit(limit).with_for_update(skip_locked=True)
    return list(session.scalars(stmt.execution_options(populate_existing=True)))


def mark_announced(session: Session, event_ids: Iterable[str]) -> int:
    """Mark the announcements of ``event_ids`` sent; returns how many were pending."""
    now, marked = utcnow(), 0
    for batch in chunks(dict.fromkeys(event_ids)):
        result = session.execute(
            sa.update(IndexedAnnouncement)
            .where(IndexedAnnouncement.event_id.in_(batch), IndexedAnnouncement.sent_at.is_(None))
            .values(sent_at=now).execution_options(synchronize_session=False))
        marked += result.rowcount
    return marked


def purge_announced(session: Session, sent_before: datetime) -> int:
    """Delete announcements sent before ``sent_before`` (kept a while for inspection); returns how many."""
    result = session.execute(sa.delete(IndexedAnnouncement).where(IndexedAnnouncement.sent_at < sent_before)
                             .execution_options(synchronize_session=False))
    return result.rowcount
