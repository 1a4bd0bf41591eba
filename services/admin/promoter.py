"""Zero-downtime promotion: re-index the catalogue with a new model version, swap the alias, hot-load models.

`Promoter` re-embeds every catalogue shop image with a version into that version's own collection (reindex.py),
swaps the serving alias atomically, records the version as serving and makes it the runtime's default. Old
collections are kept, so a rollback is an alias swap, not a re-index. The processes' `ModelWatcher`s
(shared/serving/watcher.py) load what the registry wants; the `PromotionWorker` (promotion_worker.py) runs
promotions that training left in state `reindexing`.

Why the order inside a promotion is what it is (search must never fail during the swap):

1. The version is loaded (locally, or by the model services' watchers) BEFORE the alias moves: search reads
   the alias once per query and embeds with that version, so the version behind the alias must be loaded.
2. The previous version stays loaded afterwards (the watcher keeps the rollback target): queries that read
   the old alias just before the swap finish on the old model, and a rollback needs no load.

Uploads during a re-index land in the old collection (reindex.py), so after the swap the tail is re-checked:
every product updated since the re-index started is re-embedded into the new collection (or removed from it
when it was deleted meanwhile), and `recheck_tail` repeats that once more a while after the swap, for ingest
batches that read the old alias before the swap but committed after the first re-check.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.admin.reindex import ProgressCallback, Reindexer, ReindexProgress
from shared.catalog.alias import move_serving_alias
from shared.db import repository
from shared.db.models import ModelState, ModelVersion, RunState, utcnow
from shared.errors import FashionError, InvalidInput, NotFound, Unavailable
from shared.imaging import ImageIntake
from shared.serving.analyzer import Analyzer
from shared.vectorstore import VectorStore

log = logging.getLogger(__name__)

# Re-check a bit further back than the re-index start: an ingest transaction stamps `updated_at` before it
# commits, and the clocks of the ingest and promotion processes may differ a little.
TAIL_MARGIN_S = 30.0
# When, after a swap, `recheck_tail` looks once more for uploads that read the old alias before the swap: longer
# than an ingest batch may take (its analyze deadline is 60 s by default).
TAIL_RECHECK_AFTER_S = 90.0
RUN_CURSOR = "reindex_cursor"
RUN_STARTED = "reindex_started_at"


class NothingToRollBack(FashionError):
    """No earlier serving version exists. Not one of the typed codes, so it maps to FAILED_PRECONDITION."""


class CheckpointVersionMismatch(FashionError):
    """The registry's checkpoint path holds another version than the registry row says."""


@dataclass(frozen=True)
class PromotionResult:
    version: str
    previous: str | None  # the version the alias pointed at before
    reindexed: ReindexProgress | None  # None when the collection was already built (a rollback, a re-promotion)
    caught_up: int  # products re-checked after the swap


class Promoter:
    """Re-index, swap, roll back. One promotion at a time per process (a lock); every step is idempotent, so a
    promotion interrupted anywhere can simply be run again.

    `runtime` is the `Analyzer` this process embeds with: a `ModelRuntime` (the version is loaded here from
    its checkpoint) or a remote one (the model services' watchers load it; we wait up to `preload_wait_s`).
    """

    def __init__(self, runtime: Analyzer, sessions: sessionmaker[Session], store: VectorStore, *,
                 intake: ImageIntake, batch_size: int = 64, preload_wait_s: float = 120.0,
                 analyze_timeout_s: float = 120.0, tail_recheck_after_s: float = TAIL_RECHECK_AFTER_S,
                 tail_margin_s: float = TAIL_MARGIN_S) -> None:
        self.reindexer = Reindexer(runtime, sessions, store, batch_size=batch_size, intake=intake,
                                   analyze_timeout_s=analyze_timeout_s)
        self.runtime = runtime
        self.sessions = sessions
        self.store = store
        self.preload_wait_s = preload_wait_s
        self.tail_recheck_after_s = tail_recheck_after_s
        self.tail_margin = timedelta(seconds=tail_margin_s)
        self._lock = threading.Lock()
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
            return self.reindexer.catch_up(version, since)

    def interrupt(self) -> None:
        """Stop a re-index between two pages (shutdown): `Interrupted` is raised there; the cursor is saved."""
        self.reindexer.interrupt()

    # -- the steps ----------------------------------------------------------------------------------------------


    def _promote(self, version: str, *, run_id: str | None, progress_cb: ProgressCallback | None,
                 rollback: bool) -> tuple[ModelVersion, PromotionResult]:
        if not isinstance(version, str) or not version.strip():
            raise InvalidInput("expected a model version to promote, got an empty one")
        with self._lock:
            with self.sessions.begin() as session:
                model = repository.get_model_version(session, version)
                original_state = model.state
                stopped = repository.stopped_serving_at(session, model)
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
            reindexed = self.reindexer.reindex(version, self._progress_for(run_id, progress_cb), cursor=cursor,
                                               started_at=started)
            since = reindexed.started_at
        elif not rollback and previous != version:
            # It served before: its collection misses what was uploaded since it stopped. Catch up first, so
            # it serves complete; the check after the swap then covers only the catch-up's own duration.
            since = utcnow()
            self.reindexer.catch_up(version, stopped - self.tail_margin)
        else:
            since = stopped  # a rollback swaps first (instant) and catches up right after
        swapped = utcnow()
        move_serving_alias(self.store, version)
        with self.sessions.begin() as session:
            served = repository.set_serving(session, version)
        set_default = getattr(self.runtime, "set_default", None)
        if set_default is not None:
            set_default(version)
        caught_up = self.reindexer.catch_up(version, since - self.tail_margin)
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
