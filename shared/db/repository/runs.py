"""Training runs: one active run per key, the state machine's moves, progress updates, lookups for the admin API.

Every change of a run's state goes through :func:`move_run`, which allows exactly the moves in
``shared.db.models.RUN_TRANSITIONS``; :func:`update_run` writes progress only. Both lock the row, so two
writers (the retrain worker and the promotion worker, a redelivered task and a slow one) take turns, and the
second sees the state the first left.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import (
    ACTIVE_RUN_STATES,
    RUN_TRANSITIONS,
    TERMINAL_RUN_STATES,
    TRAINING_RUN_STATES,
    RunState,
    TrainingRun,
    utcnow,
)
from shared.db.repository._sql import insert_for
from shared.errors import FashionError, InvalidInput, NotFound

# What update_run and move_run may write besides the state. `progress` is merged into the stored notes.
PROGRESS_FIELDS = frozenset({"epoch", "epochs", "loss", "eta_seconds", "message", "progress", "metrics",
                             "base_version", "candidate_version"})


class IllegalRunTransition(FashionError):
    """A move the run's state machine does not allow (a run another worker already finished, failed or took over).

    Not one of the typed input errors: the request was well-formed, the run is in the wrong state for it, so it
    maps to FAILED_PRECONDITION.
    """

    def __init__(self, run_id: str, current: RunState, to: RunState) -> None:
        allowed = sorted(RUN_TRANSITIONS[current])
        super().__init__(f"training run {run_id} cannot move from {current.value!r} to {to.value!r}: expected one "
                         f"of {[s.value for s in allowed] or 'nothing (it has ended)'} from {current.value!r}")
        self.run_id, self.current, self.to = run_id, current, to


def active_run(session: Session, key: str) -> TrainingRun | None:
    stmt = (sa.select(TrainingRun)
            .where(TrainingRun.dedup_key == key, TrainingRun.state.in_([s.value for s in ACTIVE_RUN_STATES]))
            .execution_options(populate_existing=True))
    return session.scalar(stmt)


def create_or_get_active_run(
    session: Session,
    key: str,
    *,
    epochs: int = 0,
    config: Mapping[str, Any] | None = None,
    base_version: str | None = None,
    run_id: str | None = None,
) -> tuple[TrainingRun, bool]:
    """The active (queued ... reindexing) run for ``key``, creating a queued one if none: (run, created).

    A partial unique index allows one active run per key, and the insert is ``ON CONFLICT DO NOTHING``,
    so two triggers at once (two sessions, two processes) get the same run; pass one constant key (e.g.
    ``"retrain"``) for "one training at a time". Commit before enqueueing the task for a created run.
    """
    if not key:
        raise InvalidInput("expected a non-empty dedup key for the training run")
    existing = active_run(session, key)
    if existing is not None:
        return existing, False
    new_id = run_id or str(uuid.uuid4())
    stmt = (insert_for(session, TrainingRun)
            .values(run_id=new_id, dedup_key=key, state=RunState.QUEUED.value, epochs=epochs,
                    config=dict(config or {}), progress={}, base_version=base_version)
            .on_conflict_do_nothing()
            .returning(TrainingRun.run_id))
    if session.execute(stmt).scalar_one_or_none() is not None:
        return get_run(session, new_id), True
    # Another transaction created the active run between our check and insert; it has committed by now.
    existing = active_run(session, key)
    if existing is None:
        raise InvalidInput(f"run_id {new_id!r} already exists for another training run")
    return existing, False


def get_run(session: Session, run_id: str, *, for_update: bool = False) -> TrainingRun:
    """The run; ``for_update`` locks its row until the transaction ends, for a decision on its state that
    another writer must not overtake (read the state, then move it)."""
    stmt = sa.select(TrainingRun).where(TrainingRun.run_id == run_id).execution_options(populate_existing=True)
    run = session.scalar(stmt.with_for_update() if for_update else stmt)
    if run is None:
        raise NotFound(f"unknown run_id {run_id!r}: expected the id TriggerRetrain returned")
    return run


def list_runs(session: Session, *, limit: int = 20) -> list[TrainingRun]:
    stmt = (sa.select(TrainingRun).order_by(TrainingRun.created_at.desc(), TrainingRun.run_id).limit(limit)
            .execution_options(populate_existing=True))
    return list(session.scalars(stmt))


def move_run(session: Session, run_id: str, to: RunState | str, /, *, heartbeat: bool = False,
             **progress: Any) -> TrainingRun:
    """Move a run to state ``to`` and write ``progress`` fields with it, under a row lock.

    Refuses a move ``RUN_TRANSITIONS`` does not list with :class:`IllegalRunTransition`, and a state that
    does not exist with :class:`InvalidInput`. A terminal state stamps ``finished_at``.
    """
    target = _state(to)
    run = get_run(session, run_id, for_update=True)
    current = RunState(run.state)
    if target not in RUN_TRANSITIONS[current]:
        raise IllegalRunTransition(run_id, current, target)
    run.state = target.value
    if target in TERMINAL_RUN_STATES:
        run.finished_at = utcnow()
    return _write(session, run, heartbeat, progress)


def update_run(session: Session, run_id: str, /, *, heartbeat: bool = False, **progress: Any) -> TrainingRun:
    """Write progress fields (epoch, loss, eta_seconds, message, metrics, progress notes, ...) under a row lock,
    leaving the state alone. ``heartbeat=True`` also stamps ``heartbeat_at`` (the worker is alive)."""
    return _write(session, get_run(session, run_id, for_update=True), heartbeat, progress)


def _state(value: RunState | str) -> RunState:
    try:
        return RunState(value)
    except ValueError:
        raise InvalidInput(f"expected a run state in {[s.value for s in RunState]}, got {value!r}") from None


def _write(session: Session, run: TrainingRun, heartbeat: bool, fields: dict[str, Any]) -> TrainingRun:
    unknown = set(fields) - PROGRESS_FIELDS
    if unknown:
        hint = " (state changes go through move_run)" if "state" in unknown else ""
        raise InvalidInput(f"cannot update training run fields {sorted(unknown)}{hint}; expected some of "
                           f"{sorted(PROGRESS_FIELDS)}")
    if "progress" in fields:  # notes from different writers (the worker, the promoter) live side by side
        fields["progress"] = {**(run.progress or {}), **fields["progress"]}
    for name, value in fields.items():
        setattr(run, name, value)
    now = utcnow()
    run.updated_at = now
    if heartbeat:
        run.heartbeat_at = now
    session.flush()
    return run


def runs_in_state(session: Session, *states: RunState) -> list[TrainingRun]:
    """Runs in any of `states`, oldest first (e.g. those waiting in `reindexing` for the promotion worker)."""
    stmt = (sa.select(TrainingRun).where(TrainingRun.state.in_([s.value for s in states]))
            .order_by(TrainingRun.created_at).execution_options(populate_existing=True))
    return list(session.scalars(stmt))


# -- liveness: one definition for the trigger, the reaper and the API --------------------------------------


def silent_for(run: TrainingRun, now: datetime) -> float:
    """Seconds since the run last showed a sign of life: its worker's heartbeat, else (never picked up) its
    creation. The worker's keeper thread beats every third of the lock expiry while the run trains."""
    return (now - (run.heartbeat_at or run.created_at)).total_seconds()


def is_stalled(run: TrainingRun, now: datetime, stale_after_s: float) -> bool:
    """A run a worker should own (queued, training, evaluating) that has been silent for over `stale_after_s`:
    its worker died, or none took its task. States past training have no heartbeat to judge."""
    return RunState(run.state) in TRAINING_RUN_STATES and silent_for(run, now) > stale_after_s
