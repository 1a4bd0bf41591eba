"""Retraining worker settings: the shared store settings plus the worker's own knobs, from FASHION_* variables.

The ``retrain_*`` training knobs are only defaults: a trigger copies them (with any overrides) into the run's
``config``, and the worker trains with the run's copy, so a redelivered task trains exactly as first asked.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from services.retrain.config import RetrainConfig
from shared.config import StoreSettings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "retrain"


class RetrainSettings(StoreSettings):
    redis_url: str = Field(DEFAULT_REDIS_URL, description="Celery broker and result backend, and the training lock")
    runs_dir: Path = Field(Path("var/runs"), description="one folder per run: last.pt (resumable) and model.pt")
    retrain_queue: str = Field(DEFAULT_QUEUE, description="the Celery queue training tasks go to")
    retrain_key_prefix: str = Field("fashion:", description="prefix of every Redis key (broker, results, lock)")
    retrain_device: str = Field("auto", description="auto, cpu or cuda")

    # Training defaults (see RetrainConfig): what a trigger without overrides asks for.
    retrain_epochs: int = Field(3, ge=1)
    retrain_lr: float = Field(1e-4, gt=0, description="heads; the backbone (unfreeze=top) learns at 0.1 x this "
                                                     "(1e-3 measured worse, docs/RESULTS.md)")
    retrain_batch_pairs: int = Field(16, ge=2, description="click pairs per step")
    retrain_negatives_per_pair: int = Field(2, ge=0, description="shown-but-skipped products per pair")
    retrain_max_steps_per_epoch: int | None = Field(None, ge=1)
    retrain_unfreeze: str = Field("embedding", description="embedding, fusion or top (see config.UNFREEZE)")
    retrain_distill: float = Field(1.0, ge=0, description="weight keeping category/attribute answers (fusion, top)")
    retrain_min_improvement: float = Field(0.005, description="candidate top-20 must reach serving top-20 + this")
    retrain_min_pairs: int = Field(20, ge=2, description="fewer deduplicated click pairs is an error")
    retrain_holdout_fraction: float = Field(0.2, gt=0, lt=1, description="newest pairs held out for the gate")
    retrain_seed: int = 0
    retrain_audit_data: str | None = Field(None, description="labelled consumer-to-shop folder the gate judges on "
                                                              "(default: held-out clicks, biased to the serving model)")

    # Delivery and liveness. The visibility timeout must outlast the longest run: Redis redelivers a
    # task that was not acknowledged within it, even while a live worker is still training it.
    retrain_time_limit_s: int = Field(4 * 3600, ge=5, description="hard limit: the worker kills the task")
    retrain_soft_time_limit_s: int | None = Field(None, ge=1, description="default: time limit - 60 s")
    retrain_visibility_timeout_s: int = Field(5 * 3600, ge=5, description="longer than the time limit")
    retrain_restore_interval_s: int = Field(10, ge=1, description="how often workers look for expired tasks")
    retrain_lock_timeout_s: float = Field(60.0, ge=1, description="training lock expiry; extended while alive")
    retrain_stale_after_s: float = Field(300.0, ge=1, description="a training run's heartbeat older than this "
                                         "means its worker died: the API shows it stalled, the admin re-enqueues it")
    retrain_max_retries: int = Field(10, ge=0, description="retries on infrastructure errors (DB/Redis down)")
    retrain_retry_backoff_max_s: int = Field(600, ge=1)

    @model_validator(mode="after")
    def _limits_agree(self) -> RetrainSettings:
        if self.retrain_visibility_timeout_s <= self.retrain_time_limit_s:
            raise ValueError(f"expected FASHION_RETRAIN_VISIBILITY_TIMEOUT_S > FASHION_RETRAIN_TIME_LIMIT_S "
                             f"({self.retrain_time_limit_s}), got {self.retrain_visibility_timeout_s}: Redis "
                             "would hand a still-running training task to a second worker")
        if self.soft_time_limit_s >= self.retrain_time_limit_s:
            raise ValueError(f"expected the soft time limit below the hard one ({self.retrain_time_limit_s} s), "
                             f"got {self.soft_time_limit_s}")
        if self.retrain_stale_after_s <= self.retrain_lock_timeout_s / 3:
            raise ValueError(f"expected FASHION_RETRAIN_STALE_AFTER_S > FASHION_RETRAIN_LOCK_TIMEOUT_S / 3 "
                             f"(the heartbeat period, {self.retrain_lock_timeout_s / 3:.1f} s), "
                             f"got {self.retrain_stale_after_s}")
        return self

    @property
    def soft_time_limit_s(self) -> int:
        if self.retrain_soft_time_limit_s is not None:
            return self.retrain_soft_time_limit_s
        return max(self.retrain_time_limit_s - 60, self.retrain_time_limit_s // 2)

    @property
    def lock_key(self) -> str:
        return f"{self.retrain_key_prefix}retrain:lock"

    def config(self) -> RetrainConfig:
        """The training defaults a trigger starts from (torch-free: enqueueing a run loads no model code)."""
        return RetrainConfig(epochs=self.retrain_epochs, lr=self.retrain_lr, batch_pairs=self.retrain_batch_pairs,
                             negatives_per_pair=self.retrain_negatives_per_pair,
                             max_steps_per_epoch=self.retrain_max_steps_per_epoch, unfreeze=self.retrain_unfreeze,
                             distill=self.retrain_distill,
                             min_improvement=self.retrain_min_improvement, min_pairs=self.retrain_min_pairs,
                             holdout_fraction=self.retrain_holdout_fraction, seed=self.retrain_seed,
                             audit_data=self.retrain_audit_data)

    def database(self) -> str:
        """The database URL: configured, else the machine's Postgres when it answers, else SQLite."""
        from shared.db.session import resolve_database_url

        return resolve_database_url(self)
