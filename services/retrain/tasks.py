"""The training task: thin. It opens the stores, takes the training lock and calls ``pipeline.run_training``.

Idempotent on the run id: a run past training returns its state; a duplicate delivery while another worker
trains the run (its lock held and being extended, its heartbeat fresh) is skipped; a lock left by a dead
worker is waited out (retry); anything else trains, resuming from ``last.pt``.
"Only one run trains at a time" is a Redis lock with an expiry, extended (and the run's heartbeat stamped)
by a keeper thread while training: a worker that dies stops extending it and the lock frees itself.
Database and Redis outages are retried with exponential backoff; data errors never are (the run is failed).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import redis
import sqlalchemy.exc
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from redis.lock import Lock
from sqlalchemy.orm import Session, sessionmaker

from services.retrain import runs
from services.retrain.celery_app import TRAIN_RUN_TASK, app
from services.retrain.finetune import Progress
from services.retrain.pipeline import run_training
from services.retrain.settings import RetrainSettings
from shared.db.models import utcnow
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# Infrastructure trouble, worth retrying: the database or Redis is down, or the lock was lost.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, Unavailable,
)
SETTINGS: RetrainSettings = app.settings


class LockLost(Unavailable):
    """The training lock expired or was taken while training (Redis restarted, or the worker stalled)."""


class LockBusy(Exception):
    """Another worker holds the training lock; retry after ``wait_s`` (counts against ``max_retries``)."""

    def __init__(self, holder: str | None, wait_s: float) -> None:
        super().__init__(f"the training lock is held by run {holder or '?'}; retrying in {wait_s:.0f} s")
        self.wait_s = wait_s


@dataclass(frozen=True)
class Resources:
    sessions: sessionmaker[Session]
    redis: redis.Redis


@functools.cache
def _resources(pid: int) -> Resources:
    """Per worker process (engines and pools never cross a fork): the session factory and Redis client."""
    from shared.db.session import make_engine, session_factory

    return Resources(session_factory(make_engine(SETTINGS.database())), redis.Redis.from_url(SETTINGS.redis_url))


class LockKeeper:
    """Holds the training lock for one run: extends it and stamps the heartbeat every third of its expiry."""

    def __init__(self, client: redis.Redis, sessions: sessionmaker[Session], run_id: str,
                 settings: RetrainSettings) -> None:
        self.run_id = run_id
        self.sessions = sessions
        self.timeout = settings.retrain_lock_timeout_s
        self.lock = Lock(client, settings.lock_key, timeout=self.timeout, thread_local=False)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.lock.acquire(blocking=False, token=f"{self.run_id}/{uuid.uuid4().hex}"):
            return False
        self._thread = threading.Thread(target=self._keep, name=f"lock-{self.run_id[:8]}", daemon=True)
        self._thread.start()
        return True

    def holder(self) -> str | None:
        token = self.lock.redis.get(self.lock.name)
        return token.decode().split("/", 1)[0] if token else None

    def holder_is_alive(self) -> bool:
        """Watch the lock for one extension period: a live holder's keeper pushes its expiry back up.

        A heartbeat alone cannot tell a holder that died a second ago from a live one; the lock can.
        """
        client, name = self.lock.redis, self.lock.name
        first = client.pttl(name)
        deadline = time.monotonic() + self.timeout / 3 + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            left = client.pttl(name)
            if left < 0:  # gone (-2) or without expiry (-1, never set by a keeper)
                return False
            if left > first:
                return True
            first = left
        return False

    def _keep(self) -> None:
        while not self._stop.wait(self.timeout / 3):
            try:
                self.lock.extend(self.timeout, replace_ttl=True)
            except Exception as exc:  # LockNotOwnedError, or Redis unreachable
                log.error("training run %s lost its lock: %s", self.run_id, exc)
                self.lost.set()
                return
            try:
                runs.heartbeat(self.sessions, self.run_id)
            except Exception as exc:  # the database blinked: the next beat may succeed
                log.warning("heartbeat of training run %s failed: %s", self.run_id, exc)

    def check(self, _progress: Progress | None = None) -> None:
        """Progress callback: stop training as soon as the lock is gone (another worker may take over)."""
        if self.lost.is_set():
            raise LockLost(f"training run {self.run_id} lost the training lock {self.lock.name!r}: expected it "
                           "to be extended while training")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.lock.owned():
                self.lock.release()
        except redis.exceptions.RedisError as exc:
            log.warning("could not release the training lock (it expires by itself): %s", exc)


class TrainTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 (Celery's signature)
        """Retries exhausted or a bug: record it on the run (best effort) so it blocks no later trigger.

        Not for a lock that stayed busy: its holder may be training this very run.
        """
        run_id = args[0] if args else kwargs.get("run_id")
        if isinstance(exc, LockBusy):
            log.error("gave up waiting for the training lock for run %s: %s", run_id, exc)
            return
        try:
            runs.fail_run(_resources(os.getpid()).sessions, run_id, f"training task failed: {exc!r}")
        except Exception as err:
            log.error("could not mark training run %s failed: %s", run_id, err)


@app.task(bind=True, base=TrainTask, name=TRAIN_RUN_TASK, acks_late=True, reject_on_worker_lost=True,
          autoretry_for=INFRASTRUCTURE_ERRORS, retry_backoff=True, retry_jitter=True,
          retry_backoff_max=SETTINGS.retrain_retry_backoff_max_s, max_retries=SETTINGS.retrain_max_retries)
def train_run(self: Task, run_id: str) -> str:
    """Train run ``run_id``; returns its state afterwards, or ``"skipped"`` for a duplicate delivery."""
    res = _resources(os.getpid())
    status = runs.run_status(res.sessions, run_id)
    if not runs.needs_training(status):
        return status.state.value
    keeper = LockKeeper(res.redis, res.sessions, run_id, SETTINGS)
    if not keeper.acquire():
        holder = keeper.holder()
        decision = runs.when_locked(status, run_id, holder, now=utcnow(), stale_after_s=SETTINGS.retrain_stale_after_s)
        if decision == "skip" and keeper.holder_is_alive():
            log.info("training run %s is being trained by another worker; skipping this delivery", run_id)
            return "skipped"
        busy = LockBusy(holder, SETTINGS.retrain_lock_timeout_s / 2)
        log.info("%s", busy)
        raise self.retry(exc=busy, countdown=busy.wait_s)
    try:
        state = run_training(run_id, sessions=res.sessions, runs_dir=SETTINGS.runs_dir,
                             device=SETTINGS.retrain_device, progress_cb=keeper.check,
                             progress_bar=sys.stderr.isatty())  # Celery's log proxy is no terminal
    except SoftTimeLimitExceeded:
        limit = f"{SETTINGS.soft_time_limit_s} s (FASHION_RETRAIN_SOFT_TIME_LIMIT_S)"
        return runs.fail_run(res.sessions, run_id, f"training exceeded the soft time limit of {limit}").value
    finally:
        keeper.release()
    return state.value
