"""The admin deployable: AdminService (retrain, runs, models, promote, rollback, dead letters) behind the admin
token, and the promotion worker, the one owner of re-indexing and of the serving alias."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.admin.core import AdminCore, DeadLetterReader
from services.admin.promoter import Promoter
from services.admin.promotion_worker import PromotionWorker
from services.admin.server import admin_servicers
from services.admin.settings import AdminSettings
from services.resources import Resources
from shared.config import ImageSettings
from shared.errors import Unavailable
from shared.host import Components, Named
from shared.messaging.dlq import DeadLetters, read_latest_dead_letters

if TYPE_CHECKING:
    from services.retrain.trigger import Retraining

log = logging.getLogger(__name__)


def build(settings: AdminSettings, resources: Resources, images: ImageSettings) -> Components:
    sessions, store = resources.sessions(), resources.store()  # the store first: models load its alias's version
    # One Promoter per process: AdminService and the PromotionWorker share its lock.
    promoter = Promoter(resources.analyzer(), sessions, store, batch_size=settings.promotion_batch,
                        preload_wait_s=settings.preload_wait_s, intake=images.image_intake(),
                        analyze_timeout_s=settings.promotion_analyze_timeout_s)
    if settings.token() is None:
        log.warning("AdminService refuses every call: set FASHION_ADMIN_TOKEN to enable it")
    retraining = _retraining()
    core = AdminCore(sessions, promoter, retraining.trigger if retraining else None,
                     stale_after_s=retraining.stale_after_s if retraining else None,
                     dlq_topics=settings.admin_dlq_topics,
                     read_dead_letters=_dead_letter_reader(resources, settings.admin_dlq_timeout_s))
    # The promotion worker's poll also reaps runs whose retrain worker died (see promotion_worker.py).
    worker = PromotionWorker(promoter, sessions, settings.promotion_poll_s,
                             reaper=retraining.reap if retraining else None)
    return Components(servicers=list(admin_servicers(core, settings.token())),
                      parts=[Named("promotion worker", worker)])


def _retraining() -> Retraining | None:
    """TriggerRetrain and the reaper enqueue the Celery task of services/retrain (imported on first use: no torch,
    no Celery here); a process without services/retrain answers UNAVAILABLE and reaps nothing."""
    try:
        from services.retrain.trigger import Retraining
    except ImportError:
        log.warning("services.retrain is not installed: TriggerRetrain will answer UNAVAILABLE")
        return None
    return Retraining()


def _dead_letter_reader(resources: Resources, timeout_s: float) -> DeadLetterReader:
    """Reads the broker this process's consumers use (`fashion up`), else the configured one, at call time: the
    consumers may open the broker after admin is built. An admin process with neither starts no broker of its
    own, which could only be empty."""

    def read(topics: Sequence[str], limit: int) -> DeadLetters:
        bootstrap = resources.kafka_bootstrap or resources.settings.kafka.kafka_bootstrap
        if not bootstrap:
            raise Unavailable("no Kafka broker to read dead letters from: expected FASHION_KAFKA_BOOTSTRAP to be set "
                              "where AdminService runs apart from the consumers")
        return read_latest_dead_letters(bootstrap, topics, limit, timeout_s=timeout_s)

    return read
