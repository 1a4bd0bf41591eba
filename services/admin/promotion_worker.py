"""The thread that promotes what training accepted (runs left in state `reindexing` with a candidate version), and
reaps the runs whose retrain worker died.

It runs in the process that owns the vector store (a process hosting ingest or admin), next to the `Promoter`
it drives, writing re-index progress (images re-indexed / total, ETA) into the run row as it goes. Reaping rides
on the same poll because it needs nothing but the database and the enqueue: a worker whose whole pod died
leaves its run `training` with a frozen heartbeat, and its task message comes back only after the Redis
visibility timeout (hours); the reaper (services/retrain/trigger.Retraining.reap) sends it again at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from services.admin.promoter import Promoter
from services.admin.reindex import Interrupted
from shared.db import repository
from shared.db.models import RunState
from shared.errors import FashionError
from shared.serving.polling import PollingThread

log = logging.getLogger(__name__)

REAPED = Counter("fashion_retrain_runs_reaped_total",
                 "Training runs whose worker fell silent (heartbeat stale) and whose task was sent again.")


class PromotionWorker(PollingThread):
    """Promotes runs in state `reindexing` (their candidate accepted by evaluation), one at a time.

    A typed error (unknown version, missing checkpoint, ...) fails the run with its message; anything else
    (the database or Qdrant briefly down) is retried on the next polls, up to `max_attempts`. Each poll first
    calls `reaper` (if any: `reaper(sessions)` -> ids of the stalled runs whose task it sent again).
    """

    name = "promotion-worker"

    def __init__(self, promoter: Promoter, sessions: sessionmaker[Session], interval_s: float = 5.0, *,
                 max_attempts: int = 3, reaper: Callable[[sessionmaker[Session]], list[str]] | None = None) -> None:
        super().__init__(interval_s)
        self.promoter = promoter
        self.sessions = sessions
        self.max_attempts = max_attempts
        self.reaper = reaper
        self._attempts: dict[str, int] = {}

    def stop(self, timeout: float = 30.0) -> None:
        self.promoter.interrupt()
        super().stop(timeout)

    def poll_once(self) -> list[str]:
        """Reap stalled runs, then promote every run waiting in `reindexing`; returns the ids of runs promoted by
        this poll."""
        self._reap()
        with self.sessions() as session:
            runs = [(r.run_id, r.candidate_version) for r in repository.runs_in_state(session, RunState.REINDEXING)]
        promoted = []
        for run_id, version in runs:
            if self.stopping:
                break
            if self._promote(run_id, version):
                promoted.append(run_id)
        self.promoter.recheck_tail()
        return promoted

    def _reap(self) -> None:
        """Errors (Redis or the database down) are logged and retried next poll: they must not stop promotions."""
        if self.reaper is None:
            return
        try:
            reaped = self.reaper(self.sessions)
        except Exception:
            log.exception("reaping stalled training runs failed; retrying on the next poll")
            return
        REAPED.inc(len(reaped))

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
