"""How the admin service asks for a retrain: the trigger ``AdminCore`` calls, and the Celery enqueue behind it.

A trigger creates the run (or finds the active one) with the worker's training defaults plus the request's
overrides, commits, and only then sends the task (``runs.trigger_run``). The task goes to Celery by name
(``celery_app.enqueue_training``), so the admin process never imports the task module or torch; and Celery
itself is imported, and its app built, on the first trigger only: most processes hosting admin never
trigger a run.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.retrain.runs import trigger_run
from services.retrain.settings import RetrainSettings
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# trigger(sessions, *, reason="", **overrides of RetrainConfig fields) -> (run_id, created)
Trigger = Callable[..., tuple[str, bool]]
Enqueue = Callable[[str], object]  # run_id -> anything (Celery's task id, ignored)


def make_trigger(settings: RetrainSettings | None = None, *, enqueue: Enqueue | None = None) -> Trigger:
    """The production trigger, with ``settings`` (default: read from FASHION_* variables) for the training
    defaults and the stale-run check. ``enqueue`` replaces Celery (tests count the runs it is handed)."""
    settings = settings or RetrainSettings()
    resolve = (lambda: enqueue) if enqueue is not None else _celery_enqueue(settings)

    def trigger(sessions: sessionmaker[Session], *, reason: str = "", **overrides: Any) -> tuple[str, bool]:
        config = settings.config().with_overrides(overrides)
        run_id, created = trigger_run(sessions, resolve(), config=config, stale_after_s=settings.retrain_stale_after_s)
        log.info("retraining %s: run %s%s", "queued" if created else "already active", run_id,
                 f" ({reason})" if reason else "")
        return run_id, created

    return trigger


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
