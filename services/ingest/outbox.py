"""Relaying the `catalog.indexed` outbox: announcements the ingest core queued in the transaction that claimed
their events (sinks.py), sent to Kafka and then marked sent.

Why an outbox: the claim makes a replayed event a no-op, so an announcement sent only after the commit was lost
for good when the worker died in between (or Kafka refused it). Now it waits in the database until sent:

* after each batch, the worker sends what the batch indexed (`AnnouncementRelay.send`); a failed send is
  logged, not raised (the batch itself is done and committed), and left to
* the sweep (`AnnouncementSweeper`, in every ingest worker), which sends whatever stayed pending for longer
  than one sweep period (a failed send's), and at start whatever was pending before the process started (a
  crashed predecessor's leftovers: a restarted worker does not wait a period for them). Rows are locked while
  sent, and a second sweeper skips locked rows, so two workers do not send the same leftovers;
* a last sweep on a clean stop, once the worker's own batches are done, sends everything still pending (the
  chaos suite's kill scenario lost about a third of the announcements of a killed worker without it and the
  start-up sweep: the next incarnation caught up and stopped before one sweep period had passed).

At least once: a row sent but not marked when its sender died is sent again; a duplicate is acceptable to
consumers of `catalog.indexed` (the message names its event id), a lost announcement is not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from kafka import KafkaProducer
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.domain import ProductIndexed
from services.ingest.events import event_to_json
from shared.db import repository
from shared.db.models import utcnow
from shared.serving.polling import PollingThread

log = logging.getLogger(__name__)

ANNOUNCED = Counter("fashion_ingest_announcements_total",
                    "catalog.indexed messages Kafka acknowledged, by who sent them (batch: the worker right after "
                    "its batch; sweep: left pending by a crash or a failed send).", ["path"])
SWEEP_BATCH = 500


class AnnouncementRelay:
    """Sends announcements to `topic` with the process's producer and marks their outbox rows sent."""

    def __init__(self, sessions: sessionmaker[Session], producer: KafkaProducer, topic: str, *,
                 send_timeout_s: float = 10.0) -> None:
        self.sessions = sessions
        self.producer = producer
        self.topic = topic
        self.send_timeout_s = send_timeout_s

    def send(self, indexed: Sequence[ProductIndexed]) -> bool:
        """Announce what a batch just committed; False when it could not (the sweep sends it later)."""
        if not indexed:
            return True
        try:
            self._produce(indexed)
            with self.sessions.begin() as session:
                repository.mark_announced(session, [m.event_id for m in indexed])
        except Exception as exc:  # Kafka or the database: the rows stay pending (or are re-sent: a duplicate)
            log.warning("could not announce %d indexed products now (the outbox sweep retries): %s", len(indexed),
                        exc)
            return False
        ANNOUNCED.labels("batch").inc(len(indexed))
        return True

    def sweep(self, created_before: datetime) -> int:
        """Send every announcement pending since before `created_before` (younger ones may still be in the
        hands of the worker that wrote them); returns how many were sent. Raises when Kafka or the database
        fails: the sweep's next pass tries again."""
        total = 0
        while True:
            with self.sessions.begin() as session:  # the rows stay locked while they are sent
                rows = repository.pending_announcements(session, created_before=created_before, limit=SWEEP_BATCH)
                if not rows:
                    break
                messages = [ProductIndexed(r.product_id, r.model_version, r.images, r.event_id) for r in rows]
                self._produce(messages)
                repository.mark_announced(session, [m.event_id for m in messages])
            total += len(messages)
            ANNOUNCED.labels("sweep").inc(len(messages))
        if total:
            log.warning("announced %d indexed products left pending in the outbox (a worker died between its "
                        "commit and its send, or the send failed)", total)
        return total

    def _produce(self, messages: Sequence[ProductIndexed]) -> None:
        futures = [self.producer.send(self.topic, key=m.product_id.encode(), value=event_to_json(m))
                   for m in messages]
        self.producer.flush(timeout=self.send_timeout_s)
        for future in futures:
            future.get(timeout=self.send_timeout_s)


class AnnouncementSweeper(PollingThread):
    """Every `interval_s`: send the announcements left pending longer than that, and delete the ones sent
    longer than `retention_s` ago (kept that long for inspection)."""

    name = "announcement-sweeper"

    def __init__(self, relay: AnnouncementRelay, interval_s: float = 30.0, *, retention_s: float = 86_400.0) -> None:
        super().__init__(interval_s)
        self.relay = relay
        self.retention_s = retention_s
        self.started_at = utcnow()  # what was pending before this process started is a predecessor's

    def poll_once(self) -> int:
        sent = self.relay.sweep(created_before=max(utcnow() - timedelta(seconds=self.interval_s), self.started_at))
        with self.relay.sessions.begin() as session:
            repository.purge_announced(session, utcnow() - timedelta(seconds=self.retention_s))
        return sent

    def final_sweep(self) -> int:
        """Stop, then send everything still pending: called once this process's worker has finished its batches,
        so no row is in anyone's hands here (another live worker's may be: a duplicate, which is allowed)."""
        self.stop()
        try:
            return self.relay.sweep(created_before=utcnow())
        except Exception as exc:  # the next worker's start-up sweep sends them
            log.warning("could not send the pending announcements on stop (the next start sends them): %s", exc)
            return 0
