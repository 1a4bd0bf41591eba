"""A training run's bookkeeping: trigger, liveness, start, progress, failure and outcome. No torch here.

A run moves ``queued -> training -> evaluating -> reindexing`` (accepted) or ``rejected`` / ``failed``; the
legal moves are ``shared.db.models.RUN_TRANSITIONS`` and every move goes through ``repository.move_run``.
The functions below are the retraining side's every read and write of the run row; the training itself
(``pipeline.py``) only calls them. Kept torch-free so that triggering a run (the admin service,
``trigger.py``) loads no model code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from services.retrain.config import RetrainConfig
from shared.db import repository
from shared.db.models import TRAINING_RUN_STATES, ModelState, RunState, TrainingRun, utcnow
from shared.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

DEFAULT_KEY = "retrain"
# States in which training still has work to do (those RUN_TRANSITIONS lets move to "training"); later states
# belong to evaluation's outcome or to promotion.
TRAINING_STATES = TRAINING_RUN_STATES
# A run nobody picks up after a reap (no worker running, or its message lost) is sent again after 2, 4, 8 and
# then every 16 stale periods: each send is one more message waiting in the queue, a no-op once the run ran.
REAP_BACKOFF_CAP = 16


# ----------------------------------------------------------------------------------------------- trigger


def trigger_run(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str], None],
    *,
    config: RetrainConfig | None = None,
    key: str = DEFAULT_KEY,
    stale_after_s: float | None = None,
) -> tuple[str, bool]:
    """Create a queued run (or return the active one) and enqueue its task: ``(run_id, created)``.

    One active run per ``key``: concurrent triggers get the same run and only the creator enqueues, after its
    transaction committed (a worker must find the row). With ``stale_after_s``, an existing run that stalled
    is reaped as :func:`reap_stale_runs` would (the task is idempotent on the run id), so a lost task cannot
    wedge retraining. If enqueueing fails the run is marked failed, so it blocks no later trigger.
    """
    config = config or RetrainConfig()
    with sessions.begin() as session:
        serving = repository.serving_version(session)
        if serving is None:
            raise InvalidInput("expected a serving model to fine-tune: promote one first (`fashion up --checkpoint` "
                               "registers and serves a checkpoint)")
        run, created = repository.create_or_get_active_run(session, key, epochs=config.epochs,
                                                           config=config.to_dict(), base_version=serving.version)
        run_id = run.run_id
        resend = not created and stale_after_s is not None and _reap_if_due(session, run, utcnow(), stale_after_s)
    if created or resend:
        try:
            enqueue(run_id)
        except Exception as exc:
            if created:
                fail_run(sessions, run_id, f"could not enqueue the training task: {exc}")
            raise Unavailable(f"could not enqueue training run {run_id}: expected the Celery broker to accept "
                              f"the task ({exc})") from exc
    return run_id, created


# ----------------------------------------------------------------------------------------------- reaping


def reap_stale_runs(sessions: sessionmaker[Session], enqueue: Callable[[str], object], *, stale_after_s: float,
                    now: datetime | None = None) -> list[str]:
    """Send the task of every stalled run again (its whole worker died: pod deleted, OOM); returns their ids.

    Why: the dead worker's message is not lost but held unacknowledged by Redis until the visibility timeout
    (hours, as it must outlast the longest run), so the run would sit in ``training`` that long. The new
    delivery resumes from ``last.pt``; the original one, when Redis hands it out at last, finds the run trained
    (``needs_training``) or being trained under the lock (``when_locked``): a no-op.

    Decided and recorded under the run's row lock, so two admin processes reap a run once; sent after the
    commit, like a trigger's task. A send that fails (Redis down), or a crash before it, is tried again by a
    later reap, after the backoff for unanswered reaps: with the broker down nothing could train anyway.
    """
    now = now or utcnow()
    with sessions() as session:
        candidates = [r.run_id for r in repository.runs_in_state(session, *TRAINING_STATES)
                      if _reap_due(r, now, stale_after_s)]
    reaped = []
    for run_id in candidates:
        with sessions.begin() as session:
            if not _reap_if_due(session, repository.get_run(session, run_id, for_update=True), now, stale_after_s):
                continue  # another admin process reaped it since we looked
        try:
            enqueue(run_id)
        except Exception as exc:
            log.error("could not send the task of stalled training run %s again (a later reap retries): %s",
                      run_id, exc)
            with sessions.begin() as session:
                if RunState(repository.get_run(session, run_id, for_update=True).state) in TRAINING_STATES:
                    repository.update_run(session, run_id, message=f"re-enqueueing after its worker fell silent "
                                          f"failed ({exc}); a later reap retries")
            continue
        reaped.append(run_id)
    return reaped


def _pending_reap(run: TrainingRun) -> datetime | None:
    """When the run was last reaped, if no worker has beaten since (that task still waits, or was lost)."""
    stamp = (run.progress or {}).get("reaped_at")
    last = datetime.fromisoformat(stamp) if stamp else None
    if last is None or (run.heartbeat_at is not None and run.heartbeat_at >= last):
        return None
    return last


def _reap_due(run: TrainingRun, now: datetime, stale_after_s: float) -> bool:
    """Stalled, and not reaped yet during this silence (or reaped, unanswered, long enough ago: backing off)."""
    if not repository.is_stalled(run, now, stale_after_s):
        return False
    pending = _pending_reap(run)
    if pending is None:
        return True
    streak = int((run.progress or {}).get("reap_streak", 1))
    return (now - pending).total_seconds() > stale_after_s * min(2 ** streak, REAP_BACKOFF_CAP)


def _reap_if_due(session: Session, run: TrainingRun, now: datetime, stale_after_s: float) -> bool:
    """Record a reap on the row (read under its lock) if one is due; the caller then sends the task."""
    if not _reap_due(run, now, stale_after_s):
        return False
    notes = run.progress or {}
    streak = 1 if _pending_reap(run) is None else int(notes.get("reap_streak", 1)) + 1
    reaps = int(notes.get("reaps", 0)) + 1
    silent = repository.silent_for(run, now)
    repository.update_run(
        session, run.run_id, progress={"reaped_at": now.isoformat(), "reaps": reaps, "reap_streak": streak},
        message=f"re-enqueued at {now:%Y-%m-%d %H:%M:%S} UTC after {silent:.0f} s without a heartbeat (reap "
                f"{reaps}); a worker resumes it from last.pt")
    log.warning("training run %s (%s) showed no sign of life for %.0f s (over %.0f s): its worker died or none "
                "took it; sending its task again (reap %d)", run.run_id, run.state, silent, stale_after_s, reaps)
    return True


# ----------------------------------------------------------------------------------------------- liveness


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    heartbeat_at: datetime | None


def run_status(sessions: sessionmaker[Session], run_id: str) -> RunStatus:
    with sessions.begin() as session:
        run = repository.get_run(session, run_id)
        return RunStatus(RunState(run.state), run.heartbeat_at)


def needs_training(status: RunStatus) -> bool:
    return status.state in TRAINING_STATES


def when_locked(status: RunStatus, run_id: str, holder_run_id: str | None, *, now: datetime,
                stale_after_s: float) -> str:
    """What to do when the training lock is taken: ``"skip"`` or ``"wait"`` (retry later).

    Skip only when the holder trains this very run and its heartbeat is fresh: another worker has it, and
    this delivery is a duplicate. A stale holder of this run died (its lock expires soon); any other holder
    is another run training: both mean wait.
    """
    fresh = status.heartbeat_at is not None and (now - status.heartbeat_at).total_seconds() <= stale_after_s
    if holder_run_id == run_id and fresh and status.state in (RunState.TRAINING, RunState.EVALUATING):
        return "skip"
    return "wait"


def heartbeat(sessions: sessionmaker[Session], run_id: str) -> bool:
    """Stamp the run's heartbeat (its worker is alive) while it trains; False once it left training.

    The state is read under the row lock, so a beat never lands on a run the promotion code already owns.
    """
    with sessions.begin() as session:
        state = session.scalar(sa.select(TrainingRun.state).where(TrainingRun.run_id == run_id).with_for_update())
        if state is None or RunState(state) not in TRAINING_STATES:
            return False
        repository.update_run(session, run_id, heartbeat=True)
        return True


def fail_run(sessions: sessionmaker[Session], run_id: str, message: str) -> RunState:
    """Mark a run failed with ``message`` unless it already left the training states (a run in ``reindexing``
    belongs to the promotion code, which fails it itself); returns the run's state afterwards."""
    with sessions.begin() as session:
        state = RunState(repository.get_run(session, run_id, for_update=True).state)
        if state not in TRAINING_STATES:
            return state
        repository.move_run(session, run_id, RunState.FAILED, message=message, heartbeat=True)
        return RunState.FAILED


# ----------------------------------------------------------------------------------------------- the run


def candidate_version(run_id: str, now: datetime | None = None) -> str:
    return f"fn-{(now or utcnow()):%Y%m%d}-{run_id[:8]}"


def _base_checkpoint(session: Session, base_version: str | None) -> tuple[str, str]:
    """(version, checkpoint path) of the model the run fine-tunes: its base version, else today's serving."""
    model = repository.get_model_version(session, base_version) if base_version else repository.serving_version(
        session)
    if model is None:
        raise InvalidInput("expected a serving model to fine-tune, found none")
    return model.version, model.checkpoint_path


@dataclass(frozen=True)
class Start:
    """What a worker needs to train a run it just moved to ``training`` (``state`` is the run's state when
    training has nothing to do: the other fields are then empty)."""

    state: RunState
    config: RetrainConfig
    base_version: str = ""
    base_path: str = ""


def start_run(sessions: sessionmaker[Session], run_id: str) -> Start:
    """Move a run that still needs training to ``training`` (a redelivered one too: it resumes from ``last.pt``)."""
    with sessions.begin() as session:
        run = repository.get_run(session, run_id, for_update=True)
        state = RunState(run.state)
        if state not in TRAINING_STATES:
            return Start(state, RetrainConfig())
        config = RetrainConfig.from_dict(run.config)
        base_version, base_path = _base_checkpoint(session, run.base_version)
        repository.move_run(session, run_id, RunState.TRAINING, epochs=config.epochs, base_version=base_version,
                            message=None, heartbeat=True)
    return Start(RunState.TRAINING, config, base_version, base_path)


def note_resumed(sessions: sessionmaker[Session], run_id: str, epoch: int) -> None:
    """Record that training resumed from ``last.pt`` after ``epoch`` epochs (a redelivered task)."""
    with sessions.begin() as session:
        repository.update_run(session, run_id, progress={"resumed_from_epoch": epoch}, heartbeat=True)


def record_epoch(sessions: sessionmaker[Session], run_id: str, *, epoch: int, epochs: int, loss: float,
                 eta_seconds: float) -> None:
    """An epoch ended. A move to ``training`` (from ``training``), not a plain update: a run someone else
    failed or finished meanwhile refuses it, and training stops there instead of writing over that."""
    with sessions.begin() as session:
        repository.move_run(session, run_id, RunState.TRAINING, epoch=epoch, epochs=epochs, loss=loss,
                            eta_seconds=eta_seconds, heartbeat=True)


def start_evaluation(sessions: sessionmaker[Session], run_id: str, *, base_version: str,
                     base_path: str) -> tuple[str, str]:
    """Move the run to ``evaluating``; (version, checkpoint path) of the model to judge the candidate against:
    today's serving one (it may have changed while the run trained), else the run's base."""
    with sessions.begin() as session:
        repository.move_run(session, run_id, RunState.EVALUATING, eta_seconds=None, heartbeat=True)
        serving = repository.serving_version(session)
        return (serving.version, serving.checkpoint_path) if serving else (base_version, base_path)


@dataclass(frozen=True)
class Candidate:
    """A fine-tuned model saved as a serving checkpoint, to be registered in the model registry."""

    version: str
    checkpoint_path: str
    architecture: str
    embedding_dim: int
    parent_version: str


def record_outcome(sessions: sessionmaker[Session], run_id: str, candidate: Candidate, *, accepted: bool,
                   metrics: dict[str, Any], message: str) -> RunState:
    """Register the candidate and move the run on, in one transaction.

    Accepted: the version is registered ``candidate`` and the run goes to ``reindexing`` for the promotion
    code to pick up. Rejected: registered ``rejected`` (kept for inspection) and the run ends ``rejected``.
    """
    state = RunState.REINDEXING if accepted else RunState.REJECTED
    with sessions.begin() as session:
        repository.register_model_version(
            session, candidate.version, architecture=candidate.architecture,
            checkpoint_path=candidate.checkpoint_path, embedding_dim=candidate.embedding_dim, metrics=metrics,
            parent_version=candidate.parent_version,
            state=ModelState.CANDIDATE if accepted else ModelState.REJECTED)
        repository.move_run(session, run_id, state, candidate_version=candidate.version, metrics=metrics,
                            message=message, eta_seconds=0.0, heartbeat=True)
    return state
