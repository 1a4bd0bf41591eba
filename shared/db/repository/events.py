"""The processed-events ledger that makes at-least-once Kafka consumers idempotent."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from shared.db.models import ProcessedEvent
from shared.db.repository._sql import insert_rows


def claim_event(session: Session, event_id: str, topic: str, partition: int, offset: int) -> bool:
    """Record an event as processed; False when it already was (a replay: skip its side effects).

    Claim in the same transaction as the event's writes, so a crash before commit leaves it unclaimed.
    """
    return bool(claim_events(session, [(event_id, topic, partition, offset)]))


def claim_events(session: Session, events: Sequence[tuple[str, str, int, int]]) -> set[str]:
    """`claim_event` for many ``(event_id, topic, partition, offset)`` in one statement; returns the event
    ids claimed now (the others were processed before)."""
    rows = [{"event_id": e, "topic": t, "partition": p, "offset": o} for e, t, p, o in events]
    if not rows:
        return set()
    stmt = insert_rows(session, ProcessedEvent).on_conflict_do_nothing().returning(
        ProcessedEvent.__table__.c.event_id)
    return set(session.scalars(stmt, rows))
