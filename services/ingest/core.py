"""Catalogue ingestion logic: a batch of raw catalogue events -> Qdrant points + Postgres rows, idempotently.

No Kafka, gRPC or protobuf here: the transport (consumer.py) hands over raw record values, events.py decodes each
into a plain `domain.CatalogEvent`, and the transport gets per-record outcomes back (`domain.ProductIndexed` for
what it announces). What the code guarantees, and why:

* A poison record (malformed JSON, missing fields, an image that cannot be fetched or decoded, a
  decompression bomb) fails alone with a reason; it never raises, so the partition moves on.
* Anything else that raises (the model, Qdrant, the database) is an infrastructure error: it propagates, the
  consumer retries the whole batch, and since every write below is idempotent the retry converges.
* Every image of every upsert in the batch goes through ONE `analyzer.analyze` call, pinned to the model
  version that built the serving collection (search embeds queries with that version too).
* `sinks.CatalogSinks` writes each chunk: events older than what their product shows (`occurred_at`) are
  STALE and skipped, Qdrant is written, then the same database transaction writes products, images,
  predictions, claims the event ids and queues the `catalog.indexed` announcements (the outbox). A crash in
  between leaves the events unclaimed, so they are replayed; a replay of a claimed event is skipped. Point
  ids and image ids are derived from content, so a replay with a new event id rewrites the same rows and
  points.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.chunks import DEFAULT_CHUNK_LIMITS, ChunkLimits, loaded_chunks
from services.ingest.domain import BatchResult, Outcome, ProductIndexed, Status
from services.ingest.events import DEFAULT_EVENT_LIMITS, UPLOADS_TOPIC, EventLimits, decode_event, event_to_json
from services.ingest.sinks import POISON_ERRORS, CatalogSinks, Work, failed, poison
from shared.catalog.alias import serving_version
from shared.catalog.indexing import analyze_images, read_upload
from shared.db.models import ProcessedEvent
from shared.errors import InvalidInput
from shared.imaging import ImageIntake, is_url
from shared.serving.analyzer import Analyzer
from shared.vectorstore import VectorStore

if TYPE_CHECKING:
    from fashion.v1 import events_pb2

log = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """One raw record as the transport received it (value undecoded) and where it came from."""

    value: bytes | None
    topic: str = UPLOADS_TOPIC
    partition: int = 0
    offset: int = 0
    key: bytes | None = None

    @classmethod
    def of(cls, event: events_pb2.CatalogEvent, *, topic: str = UPLOADS_TOPIC, partition: int = 0,
           offset: int = 0) -> IncomingEvent:
        """The record a producer would send for `event` (tests and in-process producers)."""
        return cls(event_to_json(event), topic, partition, offset, event.product.product_id.encode())


class IngestCore:
    """Applies batches of catalogue events to the stores. Thread-compatible: one `process` call at a time.

    `on_indexed` is called once per upserted product after the database commit (an in-process hook, e.g.
    for progress). `catalog.indexed` goes through the outbox the sinks write with each claim; the Kafka worker
    sends `BatchResult.indexed` from it (outbox.py).
    """

    def __init__(
        self,
        analyzer: Analyzer,
        session_factory: sessionmaker[Session],
        store: VectorStore,
        intake: ImageIntake,
        *,
        on_indexed: Callable[[ProductIndexed], None] | None = None,
        event_limits: EventLimits = DEFAULT_EVENT_LIMITS,
        attribute_threshold: float = 0.5,
        analyze_timeout_s: float = 60.0,
        chunk_limits: ChunkLimits = DEFAULT_CHUNK_LIMITS,
        fetch_budget_s: float = 15.0,
    ) -> None:
        self.analyzer = analyzer
        self.session_factory = session_factory
        self.store = store
        self.intake = intake  # the catalogue intake: files under the roots, allowed URLs
        self.on_indexed = on_indexed
        self.event_limits = event_limits
        self.sinks = CatalogSinks(session_factory, store, attribute_threshold=attribute_threshold)
        self.analyze_timeout_s = analyze_timeout_s
        self.chunk_limits = chunk_limits
        # The time one batch may spend reading events with image URLs, so slow hosts cannot push the batch past
        # the consumer's max_poll_interval (events left when it has run out fail, and are dead-lettered).
        self.fetch_budget_s = fetch_budget_s
        self._fetch_left = fetch_budget_s  # of the batch in hand
        # Background threads hand chunks to the model while this thread decodes chunk k+1 and writes chunk k-1
        # (see `_apply_in_chunks`). Two, so the next chunk is resized (in the analyzer's caller thread) while
        # the model still runs the previous one; the model itself runs one batch at a time.
        self._model_thread = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-model")

    # -- the batch ------------------------------------------------------------------------------------------

    def process(self, batch: Sequence[IncomingEvent]) -> BatchResult:
        """Apply `batch` in order; returns one outcome per record. Raises only for infrastructure errors."""
        start = time.perf_counter()
        outcomes: dict[int, Outcome] = {}
        work, copies = self._parse(batch, outcomes)
        claimed = self._already_claimed([w.event.event_id for w in work])
        for w in work:
            if w.event.event_id in claimed:
                outcomes[w.index] = Outcome(w.index, Status.DUPLICATE, w.event.event_id, w.product_id)
        work = [w for w in work if w.index not in outcomes]
        version = self._apply_in_chunks(work, outcomes)
        for index, first in copies.items():
            original = outcomes[first]
            status = Status.FAILED if original.status is Status.FAILED else Status.DUPLICATE
            outcomes[index] = Outcome(index, status, original.event_id, original.product_id,
                                      reason=original.reason, error_type=original.error_type)
        ordered = [outcomes[i] for i in range(len(batch))]
        for outcome in ordered:
            if outcome.indexed is not None and self.on_indexed is not None:
                self.on_indexed(outcome.indexed)
        images = sum(o.images for o in ordered if o.status is Status.INDEXED)
        return BatchResult(ordered, version, images, time.perf_counter() - start)

    def _apply_in_chunks(self, work: list[Work], outcomes: dict[int, Outcome]) -> str | None:
        """Decode, analyse and write in chunks (`chunk_limits`: images and decoded pixels), pipelined: the model
        runs on chunk k while this thread decodes chunk k+1 and then writes chunk k-1 to Qdrant and the database.

        Each chunk is applied exactly as a whole batch would be (Qdrant first, then one transaction with the
        event claims), so replays stay idempotent; the caller commits Kafka offsets after all chunks.
        """
        version: str | None = None
        in_flight: tuple[list[Work], Future[str | None]] | None = None
        self._fetch_left = self.fetch_budget_s
        for chunk in loaded_chunks(work, self.chunk_limits, images=lambda w: len(w.event.images) if w.upsert else 0,
                                   load=self._load_images):
            future = self._model_thread.submit(self._analyze, [w for w in chunk if w.upsert and w.failure is None])
            if in_flight is not None:
                version = self._write_chunk(*in_flight, outcomes) or version
            in_flight = (chunk, future)
        if in_flight is not None:
            version = self._write_chunk(*in_flight, outcomes) or version
        return version

    def _write_chunk(self, chunk: list[Work], analysed: Future[str | None],
                     outcomes: dict[int, Outcome]) -> str | None:
        version = analysed.result()  # re-raises infrastructure errors: the batch is then retried whole
        for w in chunk:
            if w.failure is not None:
                outcomes[w.index] = failed(w.index, w.failure, w.event.event_id, w.product_id)
        ready = [w for w in chunk if w.failure is None]
        if ready:
            outcomes.update(self.sinks.write(ready, version))
        for w in chunk:  # written and counted: the pictures go now, not when the whole batch is done
            w.images = []
        return version

    def _parse(self, batch: Sequence[IncomingEvent],
               outcomes: dict[int, Outcome]) -> tuple[list[Work], dict[int, int]]:
        """Parse every record; returns the events to apply and {index of a repeated event id: first index}."""
        work: list[Work] = []
        first_seen: dict[str, int] = {}
        copies: dict[int, int] = {}
        for index, record in enumerate(batch):
            try:
                event = decode_event(record.value, self.event_limits)
            except POISON_ERRORS as exc:
                outcomes[index] = failed(index, exc)
                continue
            except Exception as exc:  # decoding touches no dependency: whatever it raises is this record's fault
                log.exception("decoding record %s[%d]@%d raised unexpectedly", record.topic, record.partition,
                              record.offset)
                outcomes[index] = failed(index, InvalidInput(f"expected a valid CatalogEvent, decoding it failed: "
                                                              f"{type(exc).__name__}: {exc}"))
                continue
            if event.event_id in first_seen:
                copies[index] = first_seen[event.event_id]
                continue
            first_seen[event.event_id] = index
            work.append(Work(index, record, event))
        return work, copies

    def _already_claimed(self, event_ids: list[str]) -> set[str]:
        """Event ids in the ledger already (read only: the claim itself is written with the sinks)."""
        found: set[str] = set()
        if not event_ids:
            return found
        with self.session_factory() as session:
            for start in range(0, len(event_ids), 500):  # far below both databases' bound-parameter limits
                ids = event_ids[start:start + 500]
                found.update(session.scalars(sa.select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(ids))))
        return found

    # -- images and the model ---------------------------------------------------------------------------------

    def _load_images(self, work: Work) -> int:
        """Fetch and decode every image of an upsert, URLs within what is left of the batch's fetch budget; the
        first bad one fails the event, naming the image. Returns the decoded pixels now held."""
        if not work.upsert:
            return 0
        where = f"event {work.event.event_id} (product {work.product_id})"
        fetches = any(source.uri is not None and is_url(source.uri) for source in work.event.images)
        start = time.monotonic()
        try:
            work.images = read_upload(self.intake, work.product_id, work.event.images,
                                      deadline=start + max(0.0, self._fetch_left) if fetches else None)
        except POISON_ERRORS as exc:
            work.failure = poison(exc, where)
        except Exception as exc:  # reading and decoding touch no store: whatever they raise is this event's fault
            log.exception("reading the images of %s raised unexpectedly", where)
            work.failure = InvalidInput(f"{where}: expected readable, decodable images: {type(exc).__name__}: {exc}")
        if fetches:
            self._fetch_left -= time.monotonic() - start
        return sum(im.picture.width * im.picture.height for im in work.images)

    def _analyze(self, upserts: list[Work]) -> str | None:
        """One analyze call for every image of the batch; on a typed input error, isolate it per event."""
        if not upserts:
            return None
        version = serving_version(self.store, self.analyzer)  # the first upload creates the first collection
        pictures = [im for w in upserts for im in w.images]
        try:
            analyze_images(self.analyzer, pictures, version, timeout=self.analyze_timeout_s)
        except POISON_ERRORS as exc:
            # Only a remote model can reject an image we decoded fine; find the event(s) it rejects.
            log.warning("batch analysis rejected input (%s); retrying event by event", exc)
            for w in upserts:
                try:
                    analyze_images(self.analyzer, w.images, version, timeout=self.analyze_timeout_s)
                except POISON_ERRORS as single:
                    w.failure = poison(single, f"event {w.event.event_id} (product {w.product_id}): model")
        return version
