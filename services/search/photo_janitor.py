"""Retention of the shoppers' photos in the search log: by age (short for unclicked, long for clicked, which
are training data) and by total size. Without it the log grows by every query photo (about 23 GB a day at
48 queries/s). The query rows stay, so statistics and click validation are unaffected; only the bytes go.

A polling thread in the search process (a failed pass, e.g. the database down, is logged and retried next
interval); several replicas may run it at once (each pass is one idempotent UPDATE).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from prometheus_client import Gauge
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.models import utcnow
from shared.serving.polling import PollingThread

log = logging.getLogger(__name__)

PHOTO_BYTES = Gauge("fashion_search_log_photo_bytes", "Bytes of shopper photos kept in the search log.")


class PhotoJanitor(PollingThread):
    name = "photo-janitor"

    def __init__(self, sessions: sessionmaker[Session], *, unclicked_retention: timedelta,
                 clicked_retention: timedelta, max_total_bytes: int, interval_s: float) -> None:
        super().__init__(interval_s)
        self.sessions = sessions
        self.unclicked_retention = unclicked_retention
        self.clicked_retention = clicked_retention
        self.max_total_bytes = max_total_bytes

    def poll_once(self) -> repository.PhotoExpiry:
        return self.run_once()

    def run_once(self) -> repository.PhotoExpiry:
        now = utcnow()
        with self.sessions.begin() as session:
            result = repository.expire_query_photos(session, unclicked_before=now - self.unclicked_retention,
                                                    clicked_before=now - self.clicked_retention,
                                                    max_total_bytes=self.max_total_bytes)
        PHOTO_BYTES.set(result.bytes_kept)
        if result.cleared:
            log.info("search log retention: dropped %d shopper photos (%.1f MiB); %.1f MiB kept", result.cleared,
                     result.bytes_freed / 2**20, result.bytes_kept / 2**20)
        return result
