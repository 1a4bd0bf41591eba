"""The processed-events ledger that makes at-least-once Kafka consumers idempotent."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from shared.db.models import ProcessedEvent
from shared.db.repository._sql import IN_CHUNK, chunks, insert_for


def claim_event(session: Session, event_id: str, topic: str, partition: int, offset: int) -> bool:
    """Record an event as processed; False when it already was (a replay: skip its side effects).

    Claim in the same transaction as the event's writes, so a crash before commit leaves it unclaimed.
    """
    return bool(claim_events(session, [(event_id, topic, partition, offset)]))


def claim_events(session: Session, events: Sequence[tuple[str, str, int, int]]) -> set[str]:
    """`claim_event` for many ``(event_id, topic, partition, offset)`` in one statement; returns the event
    ids claimed now (the others were processed before)."""
    rows = [{"event_id": e, "topic": t, "partition": p, "offset": o} for e, t, p, o in events]
    claimed: set[str] = set()
    for batch in chunks(rows, IN_CHUNK // 4):
        stmt = insert_for(session, ProcessedEvent).values(batch).on_conflict_do_nothing().returning(
            ProcessedEvent.event_id)
        claimed.update(session.scalars(stmt))
    return claimed
