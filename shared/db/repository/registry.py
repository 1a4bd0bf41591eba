"""The model registry: versions, their lifecycle, and the single serving version."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import ModelState, ModelVersion, utcnow
from shared.db.repository._sql import insert_for
from shared.errors import InvalidInput, NotFound

# Serialises promotions on Postgres (SQLite transactions are already serial, see session.make_engine).
_PROMOTION_LOCK_ID = 0x46534D56  # "FSMV"


def _state(value: str) -> ModelState:
    try:
        return ModelState(value)
    except ValueError:
        raise InvalidInput(f"expected a model state in {[s.value for s in ModelState]}, got {value!r}") from None


def get_model_version(session: Session, version: str) -> ModelVersion:
    model = session.scalar(sa.select(ModelVersion).where(ModelVersion.version == version)
                           .execution_options(populate_existing=True))
    if model is None:
        raise NotFound(f"unknown model version {version!r}: expected one listed by `fashion models`")
    return model


def register_model_version(
    session: Session,
    version: str,
    *,
    architecture: str,
    checkpoint_path: str,
    embedding_dim: int,
    collection_name: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent_version: str | None = None,
    state: str = ModelState.REGISTERED,
) -> ModelVersion:
    """Register a version, or update an identical re-registration (retries are safe).

    ``state`` applies only to a new row; use :func:`set_serving` / :func:`set_model_state` afterwards.
    Re-registering with another architecture or embedding size is refused: a version names one model.
    """
    if not version:
        raise InvalidInput("expected a non-empty model version")
    if _state(state) is ModelState.SERVING:
        raise InvalidInput("register the version first, then promote it with set_serving")
    if embedding_dim < 1:
        raise InvalidInput(f"expected embedding_dim >= 1, got {embedding_dim}")
    values = {"version": version, "architecture": architecture, "checkpoint_path": str(checkpoint_path),
              "embedding_dim": embedding_dim, "collection_name": collection_name, "metrics": dict(metrics or {}),
              "parent_version": parent_version, "state": str(state)}
    session.execute(insert_for(session, ModelVersion).values(**values).on_conflict_do_nothing())
    model = get_model_version(session, version)
    if (model.architecture, model.embedding_dim) != (architecture, embedding_dim):
        raise InvalidInput(
            f"model version {version!r} is already registered as {model.architecture} with embedding_dim "
            f"{model.embedding_dim}; expected the same, got {architecture} with embedding_dim {embedding_dim}")
    model.checkpoint_path = str(checkpoint_path)
    if collection_name is not None:
        model.collection_name = collection_name
    if metrics is not None:
        model.metrics = {**model.metrics, **metrics}
    if parent_version is not None:
        model.parent_version = parent_version
    session.flush()
    return model


def set_model_state(session: Session, version: str, state: str, *,
                    metrics: Mapping[str, Any] | None = None) -> ModelVersion:
    """Move a version to candidate / rejected / retired / registered (serving goes through set_serving)."""
    target = _state(state)
    if target is ModelState.SERVING:
        raise InvalidInput("use set_serving to make a version serving (it retires the current one)")
    model = get_model_version(session, version)
    if model.state == ModelState.SERVING:
        raise InvalidInput(f"model version {version!r} is serving; promote another version first")
    model.state = target.value
    if metrics is not None:
        model.metrics = {**model.metrics, **metrics}
    session.flush()
    return model


def set_serving(session: Session, version: str) -> ModelVersion:
    """Make ``version`` the one serving model; the previous one becomes ``retired`` (rollback target)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_PROMOTION_LOCK_ID)))
    model = get_model_version(session, version)
    if model.state == ModelState.SERVING:
        return model
    session.execute(sa.update(ModelVersion).where(ModelVersion.state == ModelState.SERVING.value)
                    .values(state=ModelState.RETIRED.value).execution_options(synchronize_session=False))
    session.execute(sa.update(ModelVersion).where(ModelVersion.version == version)
                    .values(state=ModelState.SERVING.value, promoted_at=utcnow())
                    .execution_options(synchronize_session=False))
    return get_model_version(session, version)


def serving_version(session: Session) -> ModelVersion | None:
    return session.scalar(sa.select(ModelVersion).where(ModelVersion.state == ModelState.SERVING.value)
                          .execution_options(populate_existing=True))


def previous_serving_version(session: Session) -> ModelVersion | None:
    """The most recently promoted version that is no longer serving: what a rollback goes back to."""
    stmt = (sa.select(ModelVersion)
            .where(ModelVersion.state == ModelState.RETIRED.value, ModelVersion.promoted_at.is_not(None))
            .order_by(ModelVersion.promoted_at.desc()).limit(1).execution_options(populate_existing=True))
    return session.scalar(stmt)


def stopped_serving_at(session: Session, model: ModelVersion) -> datetime | None:
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


def list_model_versions(session: Session) -> list[ModelVersion]:
    stmt = (sa.select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.version)
            .execution_options(populate_existing=True))
    return list(session.scalars(stmt))
