"""The retraining Celery app on Redis: ``celery -A services.retrain.celery_app worker -Q retrain -c 1``.

Delivery follows the Celery task-design advice: late acknowledgement (a task killed mid-run is delivered
again), prefetch 1 (a worker holds at most the task it is running), a Redis visibility timeout longer than the
longest run (Redis hands an unacknowledged task to another worker after it), hard and soft time limits, JSON
only. Every Redis key (queue, unacked set, results, the training lock) carries ``retrain_key_prefix``.

Run workers with the default prefork pool (``-c 1``: one training per worker): it enforces the time
limits, which the solo pool (fine for tests) does not. Enqueueing goes by task name (:func:`enqueue_training`),
so a process that only triggers runs (the admin service) imports neither torch nor the task module.
"""

from __future__ import annotations

from celery import Celery

from services.retrain.settings import RetrainSettings

TRAIN_RUN_TASK = "services.retrain.tasks.train_run"
RESULT_EXPIRES_S = 7 * 24 * 3600


class RetrainCelery(Celery):
    """A Celery app that carries the settings it was built from (read once, at start-up)."""

    settings: RetrainSettings


def make_celery(settings: RetrainSettings) -> RetrainCelery:
    app = RetrainCelery("fashion-retrain", broker=settings.redis_url, backend=settings.redis_url,
                        include=["services.retrain.tasks"])
    app.settings = settings
    prefix = settings.retrain_key_prefix
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.retrain_time_limit_s,
        task_soft_time_limit=settings.soft_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.retrain_visibility_timeout_s,
            "global_keyprefix": prefix,
            # How often an idle worker looks for tasks whose worker died (unacked past the visibility timeout).
            "unacked_restore_interval": settings.retrain_restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"global_keyprefix": prefix},
        result_expires=RESULT_EXPIRES_S,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.retrain_queue,
        task_routes={TRAIN_RUN_TASK: {"queue": settings.retrain_queue}},
        task_track_started=True,
        broker_connection_retry_on_startup=True,
    )
    return app


def enqueue_training(app: Celery, run_id: str) -> str:
    """Send the training task for ``run_id`` to the retrain queue; returns the Celery task id.

    Call it only after the transaction that created the run committed (``runs.trigger_run`` does).
    """
    queue = app.settings.retrain_queue if isinstance(app, RetrainCelery) else app.conf.task_default_queue
    return app.send_task(TRAIN_RUN_TASK, args=[run_id], queue=queue).id


# Celery's CLI (-A services.retrain.celery_app) needs a module-level app; it is built from FASHION_* variables.
app = make_celery(RetrainSettings())
