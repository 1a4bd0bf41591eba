"""Admin logic: trigger retraining, inspect runs and models, promote and roll back, read the latest dead letters.
No gRPC here.

`AdminCore` is what `server.py` exposes (behind the admin token). Retraining itself lives in services/retrain
(a Celery worker); this side only creates or finds the run and has its task enqueued, through an injected
`trigger` (services/retrain/trigger.py) so the API does not import Celery and tests can count enqueues. Dead
letters are read through an injected reader too (app.py binds shared/messaging/dlq.py to the broker), so no
Kafka here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from services.admin.promoter import Promoter
from shared.db import repository
from shared.db.models import ModelState, ModelVersion, TrainingRun, utcnow
from shared.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from services.retrain.trigger import Trigger
    from shared.messaging.dlq import DeadLetters

RETRAIN_PARAMS = ("reason", "epochs", "min_improvement")
MAX_RUNS = 200
MAX_DEAD_LETTERS = 200
DEFAULT_DEAD_LETTERS = 20

# (dead-letter topics, most records) -> the newest records of those topics, newest first.
DeadLetterReader = Callable[[Sequence[str], int], "DeadLetters"]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    state: str
    epoch: int
    epochs: int
    loss: float | None
    eta_seconds: float | None
    message: str
    metrics: dict[str, float]
    candidate_version: str | None
    created_at: datetime | None
    updated_at: datetime | None
    heartbeat_at: datetime | None = None
    stalled: bool = False  # see of()

    @classmethod
    def of(cls, run: TrainingRun, *, stale_after_s: float | None = None, now: datetime | None = None) -> RunInfo:
        """The run as the API shows it. With ``stale_after_s``, a run whose worker fell silent is ``stalled``
        and its message says so first: the state stays what the run was doing (no DB state: nothing moved it,
        and a resumed worker simply beats again), so a client polling for ``training`` is not misled into
        waiting on a dead worker."""
        message = run.message or ""
        now = now or utcnow()
        stalled = stale_after_s is not None and repository.is_stalled(run, now, stale_after_s)
        if stalled:
            silence = f"stalled: no heartbeat from a retrain worker for {repository.silent_for(run, now):.0f} s"
            message = f"{silence}; {message}" if message else silence
        return cls(run.run_id, run.state, run.epoch or 0, run.epochs or 0, run.loss, run.eta_seconds, message,
                   _numbers(run.metrics), run.candidate_version, run.created_at, run.updated_at, run.heartbeat_at,
                   stalled)


@dataclass(frozen=True)
class ModelInfo:
    version: str
    architecture: str
    state: str
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None
    promoted_at: datetime | None = None
    checkpoint_path: str = ""

    @property
    def serving(self) -> bool:
        return self.state == ModelState.SERVING

    @classmethod
    def of(cls, model: ModelVersion) -> ModelInfo:
        return cls(model.version, model.architecture, model.state, _numbers(model.metrics), model.created_at,
                   model.promoted_at, model.checkpoint_path)


def _numbers(values: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a JSON metrics column, nested keys joined with dots (the API's
    map<string, float>): {"candidate": {"top20": 0.9}} -> {"candidate.top20": 0.9}."""
    out: dict[str, float] = {}
    for k, v in (values or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_numbers(v, f"{key}."))
        elif isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            out[key] = float(v)
    return out


def retrain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated trigger parameters; proto3 zeros mean "server default" and are left out."""
    unknown = set(params) - set(RETRAIN_PARAMS)
    if unknown:
        raise InvalidInput(f"expected retrain parameters among {', '.join(RETRAIN_PARAMS)}; got {sorted(unknown)}")
    out: dict[str, Any] = {"reason": str(params.get("reason") or "")}
    epochs = params.get("epochs") or 0
    if not isinstance(epochs, int) or epochs < 0:
        raise InvalidInput(f"expected epochs >= 0 (0 = the server default), got {epochs!r}")
    if epochs:
        out["epochs"] = epochs
    gain = params.get("min_improvement") or 0.0
    if not isinstance(gain, int | float) or not math.isfinite(gain) or gain < 0:
        raise InvalidInput(f"expected min_improvement >= 0 (0 = the server default), got {gain!r}")
    if gain:
        out["min_improvement"] = float(gain)
    return out


class AdminCore:
    """``stale_after_s``: the retrain workers' stale-heartbeat threshold, for showing a run as stalled (None: a
    process without retraining judges no liveness). ``dlq_topics``: the dead-letter topics ListDeadLetters may
    read, through ``read_dead_letters`` (None: this process has no broker to read)."""

    def __init__(self, sessions: sessionmaker[Session], promoter: Promoter, trigger: Trigger | None, *,
                 stale_after_s: float | None = None, dlq_topics: Sequence[str] = (),
                 read_dead_letters: DeadLetterReader | None = None) -> None:
        self.sessions = sessions
        self.promoter = promoter
        self.trigger = trigger
        self.stale_after_s = stale_after_s
        self.dlq_topics = tuple(dlq_topics)
        self.read_dead_letters = read_dead_letters

    def trigger_retrain(self, params: Mapping[str, Any]) -> tuple[str, bool]:
        """Create (or find the active) training run and enqueue it; (run_id, created)."""
        checked = retrain_params(params)
        if self.trigger is None:
            raise Unavailable("retraining is not available in this process: expected the Celery side "
                              "(services.retrain) to be installed and configured")
        run_id, created = self.trigger(self.sessions, **checked)
        return str(run_id), bool(created)

    def get_run(self, run_id: str) -> RunInfo:
        if not run_id or not run_id.strip():
            raise InvalidInput("expected a run_id (from TriggerRetrain), got an empty one")
        with self.sessions() as session:
            return RunInfo.of(repository.get_run(session, run_id), stale_after_s=self.stale_after_s)

    def list_runs(self, limit: int = 0) -> list[RunInfo]:
        """The latest runs, newest first (0 = the default of 20)."""
        if not 0 <= limit <= MAX_RUNS:
            raise InvalidInput(f"expected a limit between 1 and {MAX_RUNS} (0 = 20), got {limit}")
        with self.sessions() as session:
            return [RunInfo.of(run, stale_after_s=self.stale_after_s)
                    for run in repository.list_runs(session, limit=limit or 20)]

    def list_models(self) -> list[ModelInfo]:
        with self.sessions() as session:
            return [ModelInfo.of(m) for m in repository.list_model_versions(session)]

    def promote_model(self, version: str) -> ModelInfo:
        return ModelInfo.of(self.promoter.promote(version))

    def rollback(self) -> ModelInfo:
        return ModelInfo.of(self.promoter.rollback())

    def list_dead_letters(self, topic: str = "", limit: int = 0) -> DeadLetters:
        """The newest records of one dead-letter topic, or of all (empty topic), newest first (0 = 20).

        Only the configured DLQ topics: this reads headers that consumers wrote, not any topic a caller names."""
        if not 0 <= limit <= MAX_DEAD_LETTERS:
            raise InvalidInput(f"expected a limit between 1 and {MAX_DEAD_LETTERS} (0 = {DEFAULT_DEAD_LETTERS}), "
                               f"got {limit}")
        if topic and topic not in self.dlq_topics:
            raise InvalidInput(f"expected a dead-letter topic among {', '.join(self.dlq_topics) or 'none configured'}"
                               f" (or none for all of them), got {topic!r}")
        if self.read_dead_letters is None:
            raise Unavailable("dead letters cannot be read in this process: expected a Kafka broker "
                              "(FASHION_KAFKA_BOOTSTRAP)")
        return self.read_dead_letters([topic] if topic else list(self.dlq_topics), limit or DEFAULT_DEAD_LETTERS)
