"""Writing analysed catalogue events to both stores: one database transaction per chunk, Qdrant written inside it.

`IngestCore` (core.py) decodes, fetches and analyses; `CatalogSinks.write` then applies what is ready, in order:

1. Per-product order: a product's events may arrive out of order when producers partition by different
   hashes (librdkafka's CRC32, kafka-python's murmur2) and so land on different partitions. Events carrying
   `occurred_at` are checked against the time of the newest event applied to their product, under a row lock
   (`repository.lock_products`); an older one is STALE: claimed, not applied, not dead-lettered. Events
   without `occurred_at` apply in arrival order, as they always did.
2. Qdrant (idempotent): replace each upserted product's points, drop deleted products everywhere.
3. Postgres: products, images, predictions, the event claims, and the `catalog.indexed` announcements
   (the outbox, sent by `outbox.AnnouncementRelay`), then commit.

Qdrant is written while the transaction holds the product locks, so two workers applying one product take
turns in both stores. A crash before the commit leaves the events unclaimed: they are replayed, and the
content-derived point and image ids make the replay converge.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from services.ingest.chunks import distinct_product_runs
from services.ingest.domain import CatalogEvent, Outcome, ProductIndexed, Status
from shared.catalog.indexing import CatalogImage, catalog_point
from shared.db import repository
from shared.errors import FashionError, InvalidInput, TooLarge
from shared.vectorstore import VectorStore
from shared.vectorstore.payload import ProductPayload

if TYPE_CHECKING:
    from services.ingest.core import IncomingEvent

log = logging.getLogger(__name__)

# Errors that mean "this record is bad", as opposed to "a dependency is down" (which must raise).
POISON_ERRORS: tuple[type[FashionError], ...] = (InvalidInput, TooLarge)


@dataclass
class Work:
    """One event on its way through the core: its record, its images once read and analysed, or its failure."""

    index: int
    record: IncomingEvent
    event: CatalogEvent
    images: list[CatalogImage] = field(default_factory=list)
    failure: FashionError | None = None
    labels: tuple[str, list[str]] | None = None  # (category, attributes), once its images are analysed

    @property
    def upsert(self) -> bool:
        return self.event.upsert

    @property
    def product_id(self) -> str:
        return self.event.product.product_id


def failed(index: int, exc: BaseException, event_id: str = "", product_id: str = "") -> Outcome:
    return Outcome(index, Status.FAILED, event_id, product_id, reason=str(exc) or type(exc).__name__,
                   error_type=type(exc).__name__)


def poison(exc: FashionError, prefix: str) -> FashionError:
    cls = TooLarge if isinstance(exc, TooLarge) else InvalidInput
    return cls(f"{prefix}: {exc}")


class CatalogSinks:
    """Applies chunks of ready events (analysed, or deletes) to Qdrant and the database; see the module doc."""

    def __init__(self, session_factory: sessionmaker[Session], store: VectorStore, *,
                 attribute_threshold: float = 0.5) -> None:
        self.session_factory = session_factory
        self.store = store
        self.attribute_threshold = attribute_threshold

    def write(self, ready: list[Work], version: str | None) -> dict[int, Outcome]:
        """One transaction for the chunk; if the database refuses one event, apply them one by one."""
        try:
            with self.session_factory.begin() as session:
                return self._write(session, ready, version)
        except POISON_ERRORS as exc:
            log.warning("batch transaction refused an event (%s); applying events one by one", exc)
        outcomes: dict[int, Outcome] = {}
        for w in ready:
            try:
                with self.session_factory.begin() as session:
                    outcomes.update(self._write(session, [w], version))
            except POISON_ERRORS as exc:
                reason = poison(exc, f"event {w.event.event_id} (product {w.product_id}): database")
                outcomes[w.index] = failed(w.index, reason, w.event.event_id, w.product_id)
        return outcomes

    def _write(self, session: Session, ready: list[Work], version: str | None) -> dict[int, Outcome]:
        live, stale = self._in_order(session, ready)
        self._write_vectors(live, version)
        outcomes = self._apply(session, live, version)
        fresh = repository.claim_events(session, [_claim(w) for w in stale])
        for w in stale:  # claimed too: a replay is then a plain duplicate
            outcomes[w.index] = Outcome(w.index, Status.STALE if w.event.event_id in fresh else Status.DUPLICATE,
                                        w.event.event_id, w.product_id)
        repository.add_announcements(session, [dataclasses.asdict(o.indexed) for o in outcomes.values()
                                               if o.indexed is not None])
        return outcomes

    def _in_order(self, session: Session, ready: list[Work]) -> tuple[list[Work], list[Work]]:
        """(events to apply, stale events): an event is stale when its `occurred_at` is before that of the newest
        event already applied to its product, in an earlier chunk or earlier in this one."""
        timed = {w.product_id for w in ready if w.event.occurred_at is not None}
        if not timed:
            return ready, []
        newest: dict[str, datetime | None] = repository.lock_products(session, timed)
        live, stale = [], []
        for w in ready:
            at, applied = w.event.occurred_at, newest.get(w.product_id)
            if at is not None and applied is not None and at < applied:
                log.warning("event %s of product %s occurred at %s, before the event applied to it (%s): ignored "
                            "as stale (do all producers partition by murmur2? see docs/DEPLOY.md)",
                            w.event.event_id, w.product_id, at.isoformat(), applied.isoformat())
                stale.append(w)
                continue
            if at is not None:
                newest[w.product_id] = at
            live.append(w)
        return live, stale

    def _labels(self, work: Work) -> tuple[str, list[str]]:
        """Product category = majority of its images' top-1 (ties: earliest image); attributes = union.

        Computed once per event: both sinks (the Qdrant payload and the products row) need them.
        """
        if work.labels is None:
            analyses = [im.analysis for im in work.images if im.analysis is not None]
            votes = Counter(a.category()[0] for a in analyses)
            best = max(votes.values())
            category = next(a.category()[0] for a in analyses if votes[a.category()[0]] == best)
            attributes = sorted({name for a in analyses
                                 for name, _, _ in a.attributes_above(self.attribute_threshold)})
            work.labels = (category, attributes)
        return work.labels

    def _write_vectors(self, ready: list[Work], version: str | None) -> None:
        """Replace each upserted product's points; remove deleted ones from every collection."""
        delete_versions: list[str] | None = None
        for w in ready:
            if w.upsert:
                assert version is not None
                category, attributes = self._labels(w)
                product = w.event.product
                payload = ProductPayload(title=product.title, category=category, attributes=tuple(attributes),
                                         price=product.price, in_stock=product.in_stock, brand=product.brand,
                                         currency=product.currency)
                points = [catalog_point(im, payload) for im in w.images]
                self.store.replace_product(version, w.product_id, points)
            else:
                if delete_versions is None:  # every collection, so a re-index in progress drops it too
                    delete_versions = self.store.list_versions()
                for v in delete_versions:
                    self.store.delete_product(v, w.product_id)

    def _apply(self, session: Session, ready: list[Work], version: str | None) -> dict[int, Outcome]:
        """Apply events in order, a few statements per run of events naming distinct products.

        Profiled: seven statements per event were a quarter of the ingest thread's time; per run they are
        five or six, whatever its length. A product named twice in a chunk starts a new run, so the later
        event still wins, as it would applied alone.
        """
        outcomes: dict[int, Outcome] = {}
        for run in distinct_product_runs(ready):
            upserts = [w for w in run if w.upsert]
            if upserts:
                assert version is not None
                self._write_upserts(session, upserts, version)
            for w in run:
                if not w.upsert:
                    repository.mark_product_deleted(session, w.product_id, occurred_at=w.event.occurred_at)
            fresh = repository.claim_events(session, [_claim(w) for w in run])
            for w in run:
                outcomes[w.index] = _outcome(w, version, claimed=w.event.event_id in fresh)
        return outcomes

    def _write_upserts(self, session: Session, upserts: list[Work], version: str) -> None:
        products = []
        for w in upserts:
            product = w.event.product
            category, attributes = self._labels(w)
            products.append({"product_id": w.product_id, "title": product.title, "brand": product.brand or None,
                             "price": product.price, "currency": product.currency or None,
                             "in_stock": product.in_stock, "category": category, "attributes": attributes,
                             "event_occurred_at": w.event.occurred_at})
        repository.upsert_products(session, products)
        # A re-upload replaces the product's picture set: images it no longer has go (predictions cascade),
        # as their points went from Qdrant, so a re-index from the database cannot resurrect them.
        repository.delete_images_except(session, {w.product_id: [im.image_id for im in w.images] for w in upserts})
        repository.upsert_images_many(session, [
            {"image_id": im.image_id, "product_id": w.product_id, "uri": im.uri, "sha256": im.sha256,
             "width": im.size[0], "height": im.size[1]} for w in upserts for im in w.images])
        predictions = []
        for w in upserts:
            for im in w.images:
                analysis = im.analysis
                assert analysis is not None
                category, score = analysis.category()
                predictions.append({"image_id": im.image_id, "category": category, "category_score": score,
                                    "attributes": {a: sc for a, _, sc in analysis.attributes_above(
                                        self.attribute_threshold)},
                                    "landmarks": analysis.landmarks})
        repository.save_predictions_many(session, version, predictions)


def _claim(w: Work) -> tuple[str, str, int, int]:
    return w.event.event_id, w.record.topic, w.record.partition, w.record.offset


def _outcome(w: Work, version: str | None, *, claimed: bool) -> Outcome:
    event = w.event
    if not claimed:  # another worker applied it between our check and now: same content, nothing to announce
        return Outcome(w.index, Status.DUPLICATE, event.event_id, w.product_id)
    if not w.upsert:
        return Outcome(w.index, Status.DELETED, event.event_id, w.product_id)
    assert version is not None  # an upsert was analysed
    indexed = ProductIndexed(product_id=w.product_id, model_version=version, images=len(w.images),
                             event_id=event.event_id)
    return Outcome(w.index, Status.INDEXED, event.event_id, w.product_id, images=len(w.images), indexed=indexed)
