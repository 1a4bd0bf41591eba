"""The ingest worker's Kafka transport: a consumer-group member on `catalog.uploads` (shared ConsumerThread).

Thin by design: records go to `IngestCore.process` undecoded; poison records (outcome FAILED) are returned to
the consumer thread, which copies them to `catalog.uploads.dlq` with the reason in headers before the batch
commits, so the partition never blocks. If `process` raises (model, Qdrant or database down), the batch is
retried: nothing is lost, and the idempotent sinks make the retry converge. Offsets are committed only after
the handler returned, i.e. after both stores and the DLQ were written.

Indexed products are announced on `catalog.indexed` through the outbox the core writes with each event claim
(outbox.py): the worker sends a batch's announcements right after it, and its sweeper sends whatever a crashed
predecessor or a failed send left pending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass

from kafka import KafkaProducer
from prometheus_client import Counter, Gauge, Histogram

from services.ingest.core import BatchResult, IncomingEvent, IngestCore, Status
from services.ingest.events import INDEXED_TOPIC, UPLOADS_DLQ_TOPIC, UPLOADS_TOPIC
from services.ingest.outbox import AnnouncementRelay, AnnouncementSweeper
from shared.messaging import make_producer
from shared.messaging.consumer_thread import ConsumerConfig, ConsumerThread, Poison
from shared.messaging.kafka import Record

log = logging.getLogger(__name__)

EVENTS = Counter("fashion_ingest_events_total", "Catalogue events handled, by outcome.", ["outcome"])
FAILURES = Counter("fashion_ingest_failures_total", "Catalogue events sent to the DLQ, by error type.",
                   ["error_type"])
IMAGES = Counter("fashion_ingest_images_total", "Catalogue images analysed and written to both stores.")
IMAGES_PER_SECOND = Gauge("fashion_ingest_images_per_second", "Images per second of the last batch with images.")
BATCH_SECONDS = Histogram("fashion_ingest_batch_seconds", "Handler time per batch: analysis, stores, DLQ, announce.",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30))
# Lag: fashion_kafka_consumer_lag{topic, partition}, kept up to date by BatchConsumer.run.


@dataclass(frozen=True)
class WorkerConfig(ConsumerConfig):
    """The consumer's settings with the ingest topics as defaults, plus where indexed products are announced."""

    topic: str = UPLOADS_TOPIC
    dlq_topic: str = UPLOADS_DLQ_TOPIC
    group_id: str = "fashion-ingest"
    indexed_topic: str = INDEXED_TOPIC
    outbox_sweep_s: float = 30.0  # how often pending announcements are looked for, and how old they must be
    outbox_retention_s: float = 86_400.0  # how long sent announcements are kept


class IngestWorker:
    """`start()` -> consuming in a thread; `stop(timeout)` -> leaves the group and returns.

    `producer`: the process's one producer, if it has one (not closed here); otherwise the worker makes
    and closes its own.
    """

    def __init__(self, core: IngestCore, bootstrap: str, config: WorkerConfig = WorkerConfig(), *,
                 producer: KafkaProducer | None = None) -> None:
        self.core = core
        self.bootstrap = bootstrap
        self.config = config
        self._producer = producer
        self._owns_producer = producer is None
        self._thread: ConsumerThread | None = None
        self._relay: AnnouncementRelay | None = None
        self._sweeper: AnnouncementSweeper | None = None
        self._lock = threading.Lock()
        self._stats: Tally[str] = Tally()

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> IngestWorker:
        """Create the topics, join the group (in the worker thread) and return once the consumer exists."""
        if self._thread is not None:
            raise RuntimeError("worker already started")
        cfg = self.config
        if self._producer is None:
            self._producer = make_producer(self.bootstrap, client_id=f"{cfg.group_id}-producer")
        self._relay = AnnouncementRelay(self.core.session_factory, self._producer, cfg.indexed_topic,
                                        send_timeout_s=cfg.send_timeout_s)
        self._thread = ConsumerThread(self.bootstrap, cfg, self.handle, self._producer,
                                      extra_topics={cfg.indexed_topic: cfg.partitions})
        self._thread.start()  # creates the indexed topic, which the sweep may send to at once
        self._sweeper = AnnouncementSweeper(self._relay, cfg.outbox_sweep_s, retention_s=cfg.outbox_retention_s)
        self._sweeper.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Finish the batch in hand, leave the group; True when the thread ended within `timeout`."""
        stopped = self._thread.stop(timeout) if self._thread is not None else True
        if self._sweeper is not None:
            if stopped:  # the last batch is sent or pending: the final sweep leaves nothing behind
                self._sweeper.final_sweep()
            else:
                self._sweeper.stop()
        if self._owns_producer and self._producer is not None and stopped:
            self._producer.close(timeout=10)
            self._producer = None
        return stopped

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.running

    @property
    def error(self) -> BaseException | None:
        """What ended the consumer thread, if it ended on an error."""
        return self._thread.error if self._thread is not None else None

    def stats(self) -> dict[str, int]:
        """Events handled so far by outcome (indexed, deleted, duplicate, failed), plus images and batches."""
        with self._lock:
            return dict(self._stats)

    def __enter__(self) -> IngestWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the handler ----------------------------------------------------------------------------------------

    def handle(self, records: list[Record]) -> list[Poison]:
        """One batch: apply, announce the indexed, return the poison (the consumer thread dead-letters it);
        raise to have the batch retried."""
        start = time.perf_counter()
        relay = self._relay
        if relay is None:
            raise RuntimeError("worker not started: no announcement relay")
        result = self.core.process([IncomingEvent(r.value, r.topic, r.partition, r.offset, r.key) for r in records])
        # Committed, announcements included (the outbox): a failed send here is the sweep's to retry, not a
        # reason to retry the batch, whose events are claimed now.
        relay.send(result.indexed)
        self._record(result, time.perf_counter() - start)
        return [Poison(records[o.index], o.reason, o.error_type or "unknown") for o in result.failed]

    def _record(self, result: BatchResult, seconds: float) -> None:
        for outcome in result.outcomes:
            EVENTS.labels(str(outcome.status)).inc()
            if outcome.status is Status.FAILED:
                FAILURES.labels(outcome.error_type or "unknown").inc()
        if result.images:
            IMAGES.inc(result.images)
            IMAGES_PER_SECOND.set(result.images / max(result.seconds, 1e-9))
        BATCH_SECONDS.observe(seconds)
        with self._lock:
            self._stats.update(str(o.status) for o in result.outcomes)
            self._stats["images"] += result.images
            self._stats["batches"] += 1
        log.info("ingest batch: %s, %d images in %.2fs", result.counts(), result.images, seconds)
