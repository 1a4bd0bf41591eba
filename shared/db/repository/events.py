"""The processed-events ledger that makes at-least-once Kafka consumers idempotent."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.db.models import ProcessedEvent
from shared.db.repository._sql import insert_for


def claim_event(session: Session, event_id: str, topic: str, partition: int, offset: int) -> bool:
    """Record an event as processed; False when it already was (a replay: skip its side effects).

    Claim in the same transaction as the event's writes, so a crash before commit leaves it unclaimed.
    """
    stmt = (insert_for(session, ProcessedEvent)
            .values(event_id=event_id, topic=topic, partition=partition, offset=offset)
            .on_conflict_do_nothing()
            .returning(ProcessedEvent.event_id))
    return session.execute(stmt).scalar_one_or_none() is not None
