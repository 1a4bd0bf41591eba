"""Training runs: one active run per key, progress updates, and lookups for the admin API."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, RunState, TrainingRun, utcnow
from shared.db.repository._sql import insert_for
from shared.errors import InvalidInput, NotFound

UPDATABLE_FIELDS = frozenset({"state", "epoch", "epochs", "loss", "eta_seconds", "message", "params", "metrics",
                              "base_version", "candidate_version", "heartbeat_at"})


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
    params: Mapping[str, Any] | None = None,
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
                    params=dict(params or {}), base_version=base_version)
            .on_conflict_do_nothing()
            .returning(TrainingRun.run_id))
    if session.execute(stmt).scalar_one_or_none() is not None:
        return get_run(session, new_id), True
    # Another transaction created the active run between our check and insert; it has committed by now.
    existing = active_run(session, key)
    if existing is None:
        raise InvalidInput(f"run_id {new_id!r} already exists for another training run")
    return existing, False


def get_run(session: Session, run_id: str) -> TrainingRun:
    run = session.scalar(sa.select(TrainingRun).where(TrainingRun.run_id == run_id)
                         .execution_options(populate_existing=True))
    if run is None:
        raise NotFound(f"unknown run_id {run_id!r}: expected the id TriggerRetrain returned")
    return run


def list_runs(session: Session, *, limit: int = 20) -> list[TrainingRun]:
    stmt = (sa.select(TrainingRun).order_by(TrainingRun.created_at.desc(), TrainingRun.run_id).limit(limit)
            .execution_options(populate_existing=True))
    return list(session.scalars(stmt))


def update_run(session: Session, run_id: str, /, *, heartbeat: bool = False, **fields: Any) -> TrainingRun:
    """Update progress fields (state, epoch, loss, eta_seconds, message, metrics, ...) under a row lock.

    ``heartbeat=True`` also stamps ``heartbeat_at`` (the worker is alive). A terminal state stamps
    ``finished_at``.
    """
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise InvalidInput(f"cannot update training run fields {sorted(unknown)}; expected some of "
                           f"{sorted(UPDATABLE_FIELDS)}")
    run = session.scalar(sa.select(TrainingRun).where(TrainingRun.run_id == run_id).with_for_update()
                         .execution_options(populate_existing=True))
    if run is None:
        raise NotFound(f"unknown run_id {run_id!r}: expected the id TriggerRetrain returned")
    if "state" in fields:
        try:
            state = RunState(fields["state"])
        except ValueError:
            raise InvalidInput(f"expected a run state in {[s.value for s in RunState]}, "
                               f"got {fields['state']!r}") from None
        fields["state"] = state.value
        if state in TERMINAL_RUN_STATES and run.finished_at is None:
            run.finished_at = utcnow()
    for name, value in fields.items():
        setattr(run, name, value)
    now = utcnow()
    run.updated_at = now
    if heartbeat:
        run.heartbeat_at = now
    session.flush()
    return run


def runs_in_state(session: Session, state: RunState) -> list[TrainingRun]:
    """Runs in `state`, oldest first (e.g. those waiting in `reindexing` for the promotion worker)."""
    stmt = (sa.select(TrainingRun).where(TrainingRun.state == state.value).order_by(TrainingRun.created_at)
            .execution_options(populate_existing=True))
    return list(session.scalars(stmt))
