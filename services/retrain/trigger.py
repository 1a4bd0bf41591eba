"""What the admin process does with retraining: trigger a run, and send again the task of a run whose worker died.

A trigger creates the run (or finds the active one) with the worker's training defaults plus the request's
overrides, commits, and only then sends the task (``runs.trigger_run``). The reaper (``runs.reap_stale_runs``,
run by the admin's promotion worker every poll) sends again the task of a run whose heartbeat went stale. Tasks
go to Celery by name (``celery_app.enqueue_training``), so the admin process never imports the task module or
torch; and Celery itself is imported, and its app built, the first time a task is sent: most processes hosting
admin never send one.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.retrain.runs import reap_stale_runs, trigger_run
from services.retrain.settings import RetrainSettings
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# trigger(sessions, *, reason="", **overrides of RetrainConfig fields) -> (run_id, created)
Trigger = Callable[..., tuple[str, bool]]
# reap(sessions) -> ids of the runs whose task was sent again
Reaper = Callable[[sessionmaker[Session]], list[str]]
Enqueue = Callable[[str], object]  # run_id -> anything (Celery's task id, ignored)


class Retraining:
    """The trigger and the reaper over one enqueue, with ``settings`` (default: read from FASHION_* variables)
    for the training defaults and the stale-run threshold. ``enqueue`` replaces Celery (tests count the runs
    it is handed)."""

    def __init__(self, settings: RetrainSettings | None = None, *, enqueue: Enqueue | None = None) -> None:
        self.settings = settings or RetrainSettings()
        self._resolve = (lambda: enqueue) if enqueue is not None else _celery_enqueue(self.settings)

    @property
    def stale_after_s(self) -> float:
        """A run in a training state silent for longer than this has lost its worker (the API says stalled)."""
        return self.settings.retrain_stale_after_s

    def trigger(self, sessions: sessionmaker[Session], *, reason: str = "", **overrides: Any) -> tuple[str, bool]:
        config = self.settings.config().with_overrides(overrides)
        run_id, created = trigger_run(sessions, self._resolve(), config=config, stale_after_s=self.stale_after_s)
        log.info("retraining %s: run %s%s", "queued" if created else "already active", run_id,
                 f" ({reason})" if reason else "")
        return run_id, created

    def reap(self, sessions: sessionmaker[Session]) -> list[str]:
        # Celery is resolved only when a run is due: a pass with nothing to reap imports nothing.
        return reap_stale_runs(sessions, lambda run_id: self._resolve()(run_id), stale_after_s=self.stale_after_s)


def make_trigger(settings: RetrainSettings | None = None, *, enqueue: Enqueue | None = None) -> Trigger:
    """The production trigger alone (see :class:`Retraining`)."""
    return Retraining(settings, enqueue=enqueue).trigger


def _celery_enqueue(settings: RetrainSettings) -> Callable[[], Enqueue]:
    """Resolves, on the first trigger and once per process, the function that sends a run's task to Celery."""
    lock = threading.Lock()
    app = None

    def resolve() -> Enqueue:
        nonlocal app
        try:
            from services.retrain.celery_app import enqueue_training, make_celery
        except ImportError as exc:
            raise Unavailable(f"retraining is not available: expected services.retrain.celery_app ({exc})") from None
        with lock:
            if app is None:
                app = make_celery(settings)
        return functools.partial(enqueue_training, app)

    return resolve
