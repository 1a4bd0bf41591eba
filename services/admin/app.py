"""The admin deployable: AdminService (retrain, runs, models, promote, rollback) behind the admin token, and the
promotion worker, the one owner of re-indexing and of the serving alias."""

from __future__ import annotations

import logging

from services.admin.core import AdminCore
from services.admin.promoter import Promoter
from services.admin.promotion_worker import PromotionWorker
from services.admin.server import admin_servicers
from services.admin.settings import AdminSettings
from services.resources import Resources
from shared.config import ImageSettings
from shared.host import Components, Named

log = logging.getLogger(__name__)


def build(settings: AdminSettings, resources: Resources, images: ImageSettings) -> Components:
    sessions, store = resources.sessions(), resources.store()  # the store first: models load its alias's version
    # One Promoter per process: AdminService and the PromotionWorker share its lock.
    promoter = Promoter(resources.analyzer(), sessions, store, batch_size=settings.promotion_batch,
                        preload_wait_s=settings.preload_wait_s, intake=images.image_intake(),
                        analyze_timeout_s=settings.promotion_analyze_timeout_s)
    if settings.token() is None:
        log.warning("AdminService refuses every call: set FASHION_ADMIN_TOKEN to enable it")
    core = AdminCore(sessions, promoter, _retrain_trigger())
    worker = PromotionWorker(promoter, sessions, settings.promotion_poll_s)
    return Components(servicers=list(admin_servicers(core, settings.token())),
                      parts=[Named("promotion worker", worker)])


def _retrain_trigger():
    """TriggerRetrain enqueues the Celery task of services/retrain; both are imported on first use."""
    from services.admin.core import retrain_trigger

    try:
        from services.retrain.settings import RetrainSettings
    except ImportError:
        log.warning("services.retrain is not installed: TriggerRetrain will answer UNAVAILABLE")
        return None
    settings = RetrainSettings()
    return retrain_trigger(settings, _celery_enqueue(settings))


def _celery_enqueue(settings):
    """Resolves (on the first trigger) the function that sends a run's training task to Celery by name, so this
    process imports neither the task module nor torch for it (services/retrain/celery_app.py)."""
    import functools
    import threading

    from shared.errors import Unavailable

    lock = threading.Lock()
    app = None

    def resolve():
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
