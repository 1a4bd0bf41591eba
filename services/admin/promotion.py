"""Zero-downtime promotion: re-index the catalogue with a new model version, swap the alias, hot-load models.

Three parts, each a plain object with injected dependencies:

* `Promoter` re-embeds every catalogue shop image with a version into that version's own collection, swaps
  the serving alias atomically, records the version as serving and makes it the runtime's default. Old
  collections are kept, so a rollback is an alias swap, not a re-index.
* `ModelWatcher` is a thread in every process with a `ModelRuntime`: it loads the versions the registry says
  are wanted (candidate, serving, the alias target, the rollback target) from their checkpoints, makes the
  registry's serving version the default, and unloads retired ones. This is how model services pick up a
  promotion without a restart, in one process or many.
* `PromotionWorker` is a thread in the process that owns the vector store: it promotes training runs that
  finished in state `reindexing`, writing progress (images re-indexed / total, ETA) into the run row.

Why the order inside a promotion is what it is (search must never fail during the swap):

1. The version is loaded (locally, or by the model services' watchers) BEFORE the alias moves: search reads
   the alias once per query and embeds with that version, so the version behind the alias must be loaded.
2. The previous version stays loaded afterwards (the watcher keeps the rollback target): queries that read
   the old alias just before the swap finish on the old model, and a rollback needs no load.

Uploads during a re-index: ingest keeps writing to the version behind the alias (the old collection), and the
database. The re-index pages the database in image-id order, so a product committed before its page is read
is included; one committed later (or changed after its page was read) is not. So after the swap the tail is
re-checked: every product updated since the re-index started is re-embedded into the new collection (or
removed from it when it was deleted meanwhile), and `recheck_tail` repeats that once more a while after the
swap, for ingest batches that read the old alias before the swap but committed after the first re-check.
Catalogue images stored without a uri (inline uploads) cannot be re-read, so they cannot be re-indexed:
they are counted and reported in the run message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.models import Image as ImageRow
from shared.db.models import ImageDomain, ModelState, ModelVersion, Product, RunState, TrainingRun, utcnow
from shared.errors import FashionError, InvalidInput, NotFound, Unavailable
from shared.imaging import ImageLimits, decode_image, read_uri
from shared.serving.analyzer import Analyzer
from shared.vectorstore import VectorPoint, VectorStore, collection_name, point_id
from shared.vectorstore.payload import product_payload

log = logging.getLogger(__name__)

# Re-check a bit further back than the re-index start: an ingest transaction stamps `updated_at` before it
# commits, and the clocks of the ingest and promotion processes may differ a little.
TAIL_MARGIN_S = 30.0
# When, after a swap, `recheck_tail` looks once more for uploads that read the old alias before the swap: longer
# than an ingest batch may take (its analyze deadline is 60 s by default).
TAIL_RECHECK_AFTER_S = 90.0
CATCH_UP_CHUNK = 256
RUN_CURSOR = "reindex_cursor"
RUN_STARTED = "reindex_started_at"


class NothingToRollBack(FashionError):
    """No earlier serving version exists. Not one of the typed codes, so it maps to FAILED_PRECONDITION."""


class CheckpointVersionMismatch(FashionError):
    """The registry's checkpoint path holds another version than the registry row says."""


class Interrupted(Exception):  # not an error: the process is shutting down
    """The promoter was asked to stop mid-way (process shutdown); the run stays resumable where it was."""


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


@dataclass(frozen=True)
class PromotionResult:
    version: str
    previous: str | None  # the version the alias pointed at before
    reindexed: ReindexProgress | None  # None when the collection was already built (a rollback, a re-promotion)
    caught_up: int  # products re-checked after the swap


def point_payload(product: Product, image: ImageRow) -> dict[str, Any]:
    """The Qdrant payload of a catalogue image, from the database rows.

    Category and attributes are the product's stored labels: search filters on them in Qdrant and then
    again in the database, and both must agree.
    """
    return product_payload(category=product.category, attributes=product.attributes or [],
                           price=float(product.price) if product.price is not None else None,
                           in_stock=product.in_stock, title=product.title, brand=product.brand,
                           currency=product.currency, image_uri=image.uri)


# -- queries this module needs that the repository does not offer (yet) -------------------------------------

def _products_changed_since(session: Session, since: datetime, *, after: str | None, limit: int) -> list[Product]:
    """Products (deleted ones too) updated at or after `since`, in product-id order, keyset-paged."""
    stmt = sa.select(Product).where(Product.updated_at >= since).order_by(Product.product_id).limit(limit)
    if after is not None:
        stmt = stmt.where(Product.product_id > after)
    return list(session.scalars(stmt.execution_options(populate_existing=True)))


def _stopped_serving_at(session: Session, model: ModelVersion) -> datetime | None:
    """When `model`'s collection stopped receiving uploads: the promotion that replaced it.

    None when it never served (its collection was never the alias target); now when it still serves.
    `set_serving` stamps `promoted_at` on every promotion, so the first promotion after this version's
    last one is the moment it was replaced.
    """
    if model.promoted_at is None:
        return None
    replaced = session.scalar(sa.select(sa.func.min(ModelVersion.promoted_at))
                              .where(ModelVersion.promoted_at > model.promoted_at))
    return replaced or utcnow()


def _runs_in_state(session: Session, state: RunState) -> list[TrainingRun]:
    stmt = (sa.select(TrainingRun).where(TrainingRun.state == state.value).order_by(TrainingRun.created_at)
            .execution_options(populate_existing=True))
    return list(session.scalars(stmt))


def _existing_point_ids(store: VectorStore, version: str, ids: Sequence[str]) -> set[str]:
    """Which of `ids` the version's collection holds already (so a resumed re-index skips them).

    Uses the store's client under the store's own lock (a local Qdrant client is not thread-safe); a
    `VectorStore.existing_ids` method would be the better home for this.
    """
    if not ids:
        return set()
    with store._guard():  # private, see the docstring
        found = store.client.retrieve(collection_name(version), ids=list(ids), with_payload=False,
                                      with_vectors=False)
    return {str(p.id) for p in found}


# -- the promoter ------------------------------------------------------------------------------------------

class Promoter:
    """Re-index, swap, roll back. One promotion at a time per process (a lock); every step is idempotent, so a
    promotion interrupted anywhere can simply be run again.

    `runtime` is the `Analyzer` this process embeds with: a `ModelRuntime` (the version is loaded here from
    its checkpoint) or a remote one (the model services' watchers load it; we wait up to `preload_wait_s`).
    """

    def __init__(self, runtime: Analyzer, sessions: sessionmaker[Session], store: VectorStore, *,
                 batch_size: int = 64, preload_wait_s: float = 120.0, limits: ImageLimits | None = None,
                 analyze_timeout_s: float = 120.0, tail_recheck_after_s: float = TAIL_RECHECK_AFTER_S,
                 tail_margin_s: float = TAIL_MARGIN_S) -> None:
        if batch_size < 1:
            raise InvalidInput(f"expected batch_size >= 1, got {batch_size}")
        self.runtime = runtime
        self.sessions = sessions
        self.store = store
        self.batch_size = batch_size
        self.preload_wait_s = preload_wait_s
        self.limits = limits or ImageLimits()
        self.analyze_timeout_s = analyze_timeout_s
        self.tail_recheck_after_s = tail_recheck_after_s
        self.tail_margin = timedelta(seconds=tail_margin_s)
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._tail: tuple[str, datetime, float] | None = None  # (version, re-check from, due at monotonic)

    # -- public API -------------------------------------------------------------------------------------------

    def promote(self, version: str, run_id: str | None = None, *,
                progress_cb: ProgressCallback | None = None) -> ModelVersion:
        """Make `version` serving: load it, re-index if it never served, swap the alias, record it.

        With `run_id`, re-index progress and the resume cursor go into that run, which ends `promoted`.
        Unknown version -> NotFound.
        """
        return self._promote(version, run_id=run_id, progress_cb=progress_cb, rollback=False)[0]

    def rollback(self) -> ModelVersion:
        """Serve the previously serving version again: its collection and model are kept, so the swap is instant;
        products uploaded since it stopped serving are embedded into its collection right after the swap."""
        with self.sessions() as session:
            previous = repository.previous_serving_version(session)
        if previous is None:
            raise NothingToRollBack("nothing to roll back to: expected a model version that served before the "
                                    "current one (promote a second version first)")
        return self._promote(previous.version, run_id=None, progress_cb=None, rollback=True)[0]

    def reindex(self, version: str, progress_cb: ProgressCallback | None = None, *, cursor: str | None = None,
                started_at: datetime | None = None) -> ReindexProgress:
        """Embed every live catalogue shop image with `version` into its collection, `batch_size` at a time.

        Resumable twice over: from `cursor` (the last image id of a finished page, kept by the caller), and
        within a page by skipping images whose point the collection already holds. The version must be
        loaded and its collection created (`promote` does both).
        """
        started_at = started_at or utcnow()
        with self.sessions() as session:
            total = repository.count_catalog_images(session)
            done = 0 if cursor is None else int(session.scalar(
                sa.select(sa.func.count()).select_from(ImageRow).join(Product)
                .where(Product.deleted.is_(False), ImageRow.domain == ImageDomain.SHOP.value,
                       ImageRow.image_id <= cursor)) or 0)
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
            present = _existing_point_ids(self.store, version, list(ids.values()))
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
        log.info("re-indexed %d images with %s (%d embedded, %d unreadable) in %.1fs", progress.done, version,
                 embedded, skipped, time.monotonic() - t0)
        return progress

    def recheck_tail(self) -> int:
        """Once, `tail_recheck_after_s` after a swap: re-embed products changed since the swap (module doc).

        Called by the PromotionWorker on every poll; returns how many products it re-checked (0 when none is due).
        """
        with self._lock:
            if self._tail is None or time.monotonic() < self._tail[2]:
                return 0
            version, since, _ = self._tail
            self._tail = None
            if self.store.alias_target() != version:
                return 0  # promoted or rolled back again since: that swap scheduled its own re-check
            return self._catch_up(version, since)

    def interrupt(self) -> None:
        """Stop a re-index between two pages (shutdown): `Interrupted` is raised there; the cursor is saved."""
        self._interrupted.set()

    # -- the steps ----------------------------------------------------------------------------------------------

    def _promote(self, version: str, *, run_id: str | None, progress_cb: ProgressCallback | None,
                 rollback: bool) -> tuple[ModelVersion, PromotionResult]:
        if not isinstance(version, str) or not version.strip():
            raise InvalidInput("expected a model version to promote, got an empty one")
        with self._lock:
            with self.sessions.begin() as session:
                model = repository.get_model_version(session, version)
                original_state = model.state
                stopped = _stopped_serving_at(session, model)
                if model.state not in (ModelState.CANDIDATE, ModelState.SERVING):
                    # Candidates are what the model services' watchers load: say "load this one" to them.
                    repository.set_model_state(session, version, ModelState.CANDIDATE)
            try:
                served, result = self._swap(model, stopped, run_id=run_id, progress_cb=progress_cb,
                                            rollback=rollback)
            except BaseException:
                if original_state not in (ModelState.CANDIDATE, ModelState.SERVING):
                    self._restore_state(version, original_state)
                raise
        log.info("model %s serving (was %s)%s", version, result.previous, " after a rollback" if rollback else "")
        return served, result

    def _swap(self, model: ModelVersion, stopped: datetime | None, *, run_id: str | None,
              progress_cb: ProgressCallback | None, rollback: bool) -> tuple[ModelVersion, PromotionResult]:
        version = model.version
        self._ensure_loaded(model)
        dim = int(self.runtime.get(version).metadata.embedding_dim)
        self.store.ensure_collection(version, dim)
        previous = self.store.alias_target()
        reindexed: ReindexProgress | None = None
        if stopped is None or self.store.count(version) == 0:
            cursor, started = self._resume_point(run_id)
            reindexed = self.reindex(version, self._progress_for(run_id, progress_cb), cursor=cursor,
                                     started_at=started)
            since = reindexed.started_at
        elif not rollback and previous != version:
            # It served before: its collection misses what was uploaded since it stopped. Catch up first, so
            # it serves complete; the check after the swap then covers only the catch-up's own duration.
            since = utcnow()
            self._catch_up(version, stopped - self.tail_margin)
        else:
            since = stopped  # a rollback swaps first (instant) and catches up right after
        swapped = utcnow()
        self.store.set_alias(version)
        with self.sessions.begin() as session:
            served = repository.set_serving(session, version)
        set_default = getattr(self.runtime, "set_default", None)
        if set_default is not None:
            set_default(version)
        caught_up = self._catch_up(version, since - self.tail_margin)
        self._tail = (version, swapped - self.tail_margin, time.monotonic() + self.tail_recheck_after_s)
        if run_id is not None:
            note = f"promoted {version} (was {previous or 'none'})"
            if reindexed is not None:
                note += f": re-indexed {reindexed.done} images"
                if reindexed.skipped:
                    note += f", {reindexed.skipped} could not be read (no stored uri or unreadable file)"
            with self.sessions.begin() as session:
                repository.move_run(session, run_id, RunState.PROMOTED, message=note, eta_seconds=0.0)
        return served, PromotionResult(version, previous, reindexed, caught_up)

    def _restore_state(self, version: str, state: str) -> None:
        try:
            with self.sessions.begin() as session:
                if repository.get_model_version(session, version).state == ModelState.CANDIDATE:
                    repository.set_model_state(session, version, state)
        except Exception:  # best effort: the promotion's own error is the one to report
            log.exception("could not restore model %s to state %s", version, state)

    def _ensure_loaded(self, model: ModelVersion) -> None:
        """Load the version here (ModelRuntime), or wait for the model services' watchers to load it."""
        try:
            self.runtime.get(model.version)
            return
        except NotFound:
            pass
        load = getattr(self.runtime, "load", None)
        if load is not None:
            loaded = load(model.checkpoint_path)
            if loaded.version != model.version:
                raise CheckpointVersionMismatch(
                    f"the checkpoint {model.checkpoint_path} holds model version {loaded.version!r}; expected "
                    f"{model.version!r} as registered")
            return
        deadline = time.monotonic() + self.preload_wait_s
        while True:
            try:
                self.runtime.get(model.version)
                return
            except NotFound:
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"model version {model.version!r} is not loaded by the model services after "
                        f"{self.preload_wait_s:.0f}s: expected their model watcher to load it from "
                        f"{model.checkpoint_path}") from None
                time.sleep(min(1.0, self.preload_wait_s))

    def _resume_point(self, run_id: str | None) -> tuple[str | None, datetime | None]:
        if run_id is None:
            return None, None
        with self.sessions() as session:
            params = repository.get_run(session, run_id).progress or {}
        started = params.get(RUN_STARTED)
        return params.get(RUN_CURSOR), datetime.fromisoformat(started) if started else None

    def _progress_for(self, run_id: str | None, progress_cb: ProgressCallback | None) -> ProgressCallback | None:
        """A callback that also saves progress and the resume cursor into the run, when there is one."""
        if run_id is None:
            return progress_cb

        def save(progress: ReindexProgress) -> None:
            with self.sessions.begin() as session:
                notes = {RUN_CURSOR: progress.cursor, RUN_STARTED: progress.started_at.isoformat()}
                repository.update_run(session, run_id, heartbeat=True, progress=notes, message=progress.message(),
                                      eta_seconds=progress.eta_seconds)
            if progress_cb is not None:
                progress_cb(progress)

        return save

    def _index_images(self, version: str, images: Sequence[ImageRow],
                      products: dict[str, Product]) -> tuple[int, int]:
        """Embed `images` with `version` and upsert their points; returns (embedded, unreadable)."""
        readable: list[tuple[ImageRow, Image.Image]] = []
        unreadable = 0
        for image in images:
            picture = self._read(image)
            if picture is None:
                unreadable += 1
            else:
                readable.append((image, picture))
        if not readable:
            return 0, unreadable
        analyses = self.runtime.analyze([p for _, p in readable], version=version, timeout=self.analyze_timeout_s)
        wrong = {a.version for a in analyses} - {version}
        if wrong:
            raise Unavailable(f"the analyzer used model {sorted(wrong)}, expected {version!r}; retry the promotion")
        points = [VectorPoint(image.product_id, image.image_id, analysis.embedding,
                              point_payload(products[image.product_id], image))
                  for (image, _), analysis in zip(readable, analyses, strict=True)]
        self.store.upsert(version, points)
        return len(points), unreadable

    def _read(self, image: ImageRow) -> Image.Image | None:
        if not image.uri:
            log.warning("image %s of product %s has no stored uri (an inline upload): cannot re-index it",
                        image.image_id, image.product_id)
            return None
        try:
            return decode_image(read_uri(image.uri, self.limits), self.limits, name=image.uri)
        except (FashionError, OSError) as exc:
            log.warning("cannot re-index image %s of product %s: %s", image.image_id, image.product_id, exc)
            return None

    def _catch_up(self, version: str, since: datetime) -> int:
        """Re-embed products changed since `since` into `version`'s collection; drop deleted ones from it."""
        after: str | None = None
        count = 0
        while True:
            with self.sessions() as session:
                changed = _products_changed_since(session, since, after=after, limit=CATCH_UP_CHUNK)
                live = {p.product_id: p for p in changed if not p.deleted}
                images = repository.get_images_for_products(session, live, domain=ImageDomain.SHOP)
            if not changed:
                return count
            for product in changed:
                self.store.delete_product(version, product.product_id)
            self._index_many(version, [im for found in images.values() for im in found], live)
            count += len(changed)
            after = changed[-1].product_id

    def _index_many(self, version: str, images: Iterable[ImageRow], products: dict[str, Product]) -> None:
        batch: list[ImageRow] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.batch_size:
                self._index_images(version, batch, products)
                batch = []
        if batch:
            self._index_images(version, batch, products)


# -- background threads ------------------------------------------------------------------------------------

class _PollingThread:
    """A daemon thread calling `poll_once` every `interval_s` until `stop()`; errors are logged, never fatal."""

    name = "poller"

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise InvalidInput(f"expected a polling interval > 0 seconds, got {interval_s}")
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self) -> _PollingThread:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0fs", self.name, timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("%s poll failed; retrying in %.1fs", self.name, self.interval_s)
            self._stop.wait(self.interval_s)


@dataclass
class WatchResult:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    default: str | None = None


class ModelWatcher(_PollingThread):
    """Keeps a `ModelRuntime` in step with the model registry (see the module doc).

    Wanted: versions in state candidate or serving, the alias target, and the rollback target (the previous
    serving version, so a rollback needs no load and queries that read the old alias still find their model).
    Retired or rejected versions outside that set are unloaded on the second poll that finds them unwanted,
    so a query that read the alias just before a swap is not left without its model. Versions the registry
    does not know (loaded by hand) are left alone. `store` may be None in a process without the vector store.
    """

    name = "model-watcher"

    def __init__(self, runtime: Any, sessions: sessionmaker[Session], store: VectorStore | None,
                 interval_s: float = 5.0) -> None:
        super().__init__(interval_s)
        self.runtime = runtime
        self.sessions = sessions
        self.store = store
        self._unwanted: set[str] = set()
        self._failed: dict[str, str] = {}  # version -> checkpoint path that failed to load (logged once)

    def poll_once(self) -> WatchResult:
        with self.sessions() as session:
            models = {m.version: m for m in repository.list_model_versions(session)}
            previous = repository.previous_serving_version(session)
        serving = next((m.version for m in models.values() if m.state == ModelState.SERVING), None)
        target = self.store.alias_target() if self.store is not None else None
        wanted = {v for v, m in models.items() if m.state in (ModelState.CANDIDATE, ModelState.SERVING)}
        wanted |= {v for v in (target, previous.version if previous else None) if v}
        result = WatchResult()
        loaded = set(self.runtime.versions())
        for version in sorted(wanted - loaded):
            if version in models and self._load(models[version]):
                result.loaded.append(version)
        if serving is not None and serving in self.runtime.versions() and self.runtime.default_version != serving:
            self.runtime.set_default(serving)
            log.info("model %s is now the default (serving in the registry)", serving)
        result.default = self.runtime.default_version
        retired = {v for v, m in models.items() if m.state in (ModelState.RETIRED, ModelState.REJECTED)}
        unwanted = (set(self.runtime.versions()) & retired) - wanted - {self.runtime.default_version}
        for version in sorted(unwanted & self._unwanted):
            self.runtime.unload(version)
            result.unloaded.append(version)
            log.info("unloaded model %s (%s)", version, models[version].state)
        self._unwanted = unwanted - set(result.unloaded)
        return result

    def _load(self, model: ModelVersion) -> bool:
        path = model.checkpoint_path
        if self._failed.get(model.version) == path:
            return False  # already reported; retried once its registry row points elsewhere
        try:
            loaded = self.runtime.load(path)
        except Exception as exc:
            self._failed[model.version] = path
            log.warning("cannot load model %s from %s: %s", model.version, path, exc)
            return False
        if loaded.version != model.version:
            self._failed[model.version] = path
            if loaded.version != self.runtime.default_version:
                self.runtime.unload(loaded.version)
            log.warning("checkpoint %s holds model %r, expected %r as registered; not serving it", path,
                        loaded.version, model.version)
            return False
        self._failed.pop(model.version, None)
        log.info("loaded model %s (%s) from %s", model.version, model.state, path)
        return True


class PromotionWorker(_PollingThread):
    """Promotes runs in state `reindexing` (their candidate accepted by evaluation), one at a time.

    A typed error (unknown version, missing checkpoint, ...) fails the run with its message; anything else
    (the database or Qdrant briefly down) is retried on the next polls, up to `max_attempts`.
    """

    name = "promotion-worker"

    def __init__(self, promoter: Promoter, sessions: sessionmaker[Session], interval_s: float = 5.0, *,
                 max_attempts: int = 3) -> None:
        super().__init__(interval_s)
        self.promoter = promoter
        self.sessions = sessions
        self.max_attempts = max_attempts
        self._attempts: dict[str, int] = {}

    def stop(self, timeout: float = 30.0) -> None:
        self.promoter.interrupt()
        super().stop(timeout)

    def poll_once(self) -> list[str]:
        """Promote every run waiting in `reindexing`; returns the ids of runs promoted by this poll."""
        with self.sessions() as session:
            runs = [(r.run_id, r.candidate_version) for r in _runs_in_state(session, RunState.REINDEXING)]
        promoted = []
        for run_id, version in runs:
            if self._stop.is_set():
                break
            if self._promote(run_id, version):
                promoted.append(run_id)
        self.promoter.recheck_tail()
        return promoted

    def _promote(self, run_id: str, version: str | None) -> bool:
        if not version:
            self._fail(run_id, "expected the run to name its candidate_version before re-indexing")
            return False
        try:
            self.promoter.promote(version, run_id=run_id)
        except Interrupted:
            log.info("promotion of %s (run %s) interrupted by shutdown; it resumes on the next start", version, run_id)
            return False
        except FashionError as exc:
            self._fail(run_id, f"promotion of {version} failed: {exc}")
            return False
        except Exception as exc:
            attempts = self._attempts.get(run_id, 0) + 1
            self._attempts[run_id] = attempts
            log.exception("promotion of %s (run %s) failed, attempt %d of %d", version, run_id, attempts,
                          self.max_attempts)
            if attempts >= self.max_attempts:
                self._fail(run_id, f"promotion of {version} failed {attempts} times, last: "
                                   f"{type(exc).__name__}: {exc}")
            return False
        self._attempts.pop(run_id, None)
        return True

    def _fail(self, run_id: str, message: str) -> None:
        log.warning("run %s: %s", run_id, message)
        self._attempts.pop(run_id, None)
        with self.sessions.begin() as session:
            repository.move_run(session, run_id, RunState.FAILED, message=message, eta_seconds=None)
