"""Re-indexing the catalogue with one model version into that version's own collection, resumably.

`Reindexer.reindex` pages the database's live catalogue shop images in image-id order and embeds them, a batch at
a time; `catch_up` re-embeds products changed since a moment (or removes them, deleted meanwhile). The
`Promoter` (promoter.py) runs both around an alias swap.

Uploads during a re-index: ingest keeps writing to the version behind the alias (the old collection), and the
database. The re-index pages the database in image-id order, so a product committed before its page is read
is included; one committed later (or changed after its page was read) is not: that is what `catch_up` is for.
Catalogue images stored without a uri (inline uploads) cannot be re-read, so they cannot be re-indexed:
they are counted as unreadable and reported in the run message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog.indexing import CatalogImage, analyze_images, catalog_point, read_stored, stored_payload
from shared.db import repository
from shared.db.models import Image as ImageRow
from shared.db.models import ImageDomain, Product, utcnow
from shared.errors import FashionError, InvalidInput
from shared.imaging import ImageIntake
from shared.serving.analyzer import Analyzer
from shared.vectorstore import VectorStore, point_id

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 256


class Interrupted(Exception):  # not an error: the process is shutting down
    """The re-index was asked to stop mid-way (process shutdown); the run stays resumable where it was."""


@dataclass(frozen=True)
class ReindexProgress:
    version: str
    done: int  # catalogue images handled so far (embedded, already present, or unreadable)
    total: int  # catalogue images when the re-index started
    embedded: int  # images embedded by this call
    skipped: int  # images that could not be read (no uri, missing file, undecodable)
    cursor: str | None  # last image id handled: where a resumed re-index continues
    started_at: datetime  # when the re-index first started (kept across resumes)
    seconds: float  # time spent by this call

    @property
    def eta_seconds(self) -> float | None:
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            return 0.0
        if self.done == 0 or self.seconds <= 0:
            return None
        return remaining * self.seconds / self.done

    def message(self) -> str:
        eta = self.eta_seconds
        text = f"re-indexing {self.version}: {self.done}/{self.total} images"
        if self.skipped:
            text += f" ({self.skipped} unreadable)"
        return text + (f", about {eta:.0f}s left" if eta else "")


ProgressCallback = Callable[[ReindexProgress], None]


class Reindexer:
    """Embeds catalogue images with a given version into its collection. The version must be loaded and its
    collection created (the Promoter does both); every write is an idempotent upsert or delete."""

    def __init__(self, analyzer: Analyzer, sessions: sessionmaker[Session], store: VectorStore, *,
                 intake: ImageIntake, batch_size: int = 64, analyze_timeout_s: float = 120.0) -> None:
        if batch_size < 1:
            raise InvalidInput(f"expected batch_size >= 1, got {batch_size}")
        self.analyzer = analyzer
        self.sessions = sessions
        self.store = store
        self.batch_size = batch_size
        self.intake = intake  # the catalogue intake: stored URIs are files under the roots or allowed URLs
        self.analyze_timeout_s = analyze_timeout_s
        self._interrupted = threading.Event()

    def interrupt(self) -> None:
        """Stop a re-index between two pages (shutdown): `Interrupted` is raised there; the cursor is saved."""
        self._interrupted.set()

    def reindex(self, version: str, progress_cb: ProgressCallback | None = None, *, cursor: str | None = None,
                started_at: datetime | None = None) -> ReindexProgress:
        """Embed every live catalogue shop image with `version` into its collection, `batch_size` at a time.

        Resumable twice over: from `cursor` (the last image id of a finished page, kept by the caller), and
        within a page by skipping images whose point the collection already holds.
        """
        started_at = started_at or utcnow()
        with self.sessions() as session:
            total = repository.count_catalog_images(session)
            done = 0 if cursor is None else repository.count_catalog_images(session, through_image_id=cursor)
        t0 = time.monotonic()
        embedded = skipped = 0
        progress = ReindexProgress(version, done, total, 0, 0, cursor, started_at, 0.0)
        while True:
            if self._interrupted.is_set():
                raise Interrupted(f"re-index of {version} interrupted at image {cursor!r}")
            with self.sessions() as session:
                page = repository.catalog_images_page(session, after_image_id=cursor, limit=self.batch_size)
                products = repository.get_products(session, {im.product_id for im in page})
            if not page:
                break
            ids = {im.image_id: point_id(im.product_id, im.image_id, version) for im in page}
            present = self.store.existing_point_ids(version, list(ids.values()))
            todo = [im for im in page if ids[im.image_id] not in present and im.product_id in products]
            added, unreadable = self._index_images(version, todo, products)
            embedded += added
            skipped += unreadable
            done += len(page)
            cursor = page[-1].image_id
            progress = ReindexProgress(version, min(done, max(total, done)), max(total, done), embedded, skipped,
                                       cursor, started_at, time.monotonic() - t0)
            if progress_cb is not None:
                progress_cb(progress)
        self.store.optimize(version)  # a bulk load builds its search index before the alias can serve it
        log.info("re-indexed %d images with %s (%d embedded, %d unreadable) in %.1fs", progress.done, version,
                 embedded, skipped, time.monotonic() - t0)
        return progress

    def catch_up(self, version: str, since: datetime) -> int:
        """Re-embed products changed since `since` into `version`'s collection; drop deleted ones from it."""
        after: str | None = None
        count = 0
        while True:
            with self.sessions() as session:
                changed = repository.products_changed_since(session, since, after=after, limit=CATCH_UP_CHUNK)
                live = {p.product_id: p for p in changed if not p.deleted}
                images = repository.get_images_for_products(session, live, domain=ImageDomain.SHOP)
            if not changed:
                return count
            for product in changed:
                self.store.delete_product(version, product.product_id)
            self._index_many(version, [im for found in images.values() for im in found], live)
            count += len(changed)
            after = changed[-1].product_id

    def _index_images(self, version: str, images: Sequence[ImageRow],
                      products: dict[str, Product]) -> tuple[int, int]:
        """Embed `images` with `version` and upsert their points; returns (embedded, unreadable)."""
        readable: list[CatalogImage] = []
        for image in images:
            try:
                readable.append(read_stored(self.intake, image))
            except FashionError as exc:
                log.warning("cannot re-index image %s of product %s: %s", image.image_id, image.product_id, exc)
        if readable:
            analyze_images(self.analyzer, readable, version, timeout=self.analyze_timeout_s)
            self.store.upsert(version, [catalog_point(im, stored_payload(products[im.product_id])) for im in readable])
        return len(readable), len(images) - len(readable)

    def _index_many(self, version: str, images: Iterable[ImageRow], products: dict[str, Product]) -> None:
        batch: list[ImageRow] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.batch_size:
                self._index_images(version, batch, products)
                batch = []
        if batch:
            self._index_images(version, batch, products)

