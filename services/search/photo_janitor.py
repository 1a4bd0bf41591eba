"""Retention of the shoppers' photos in the search log: by age (short for unclicked, long for clicked, which
are training data) and by total size. Without it the log grows by every query photo (about 23 GB a day at
48 queries/s). The query rows stay, so statistics and click validation are unaffected; only the bytes go.

A thread in the search process; several replicas may run it at once (each pass is one idempotent UPDATE).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from prometheus_client import Gauge
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.models import utcnow

log = logging.getLogger(__name__)

PHOTO_BYTES = Gauge("fashion_search_log_photo_bytes", "Bytes of shopper photos kept in the search log.")


class PhotoJanitor:
    def __init__(self, sessions: sessionmaker[Session], *, unclicked_retention: timedelta,
                 clicked_retention: timedelta, max_total_bytes: int, interval_s: float) -> None:
        self.sessions = sessions
        self.unclicked_retention = unclicked_retention
        self.clicked_retention = clicked_retention
        self.max_total_bytes = max_total_bytes
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def start(self) -> PhotoJanitor:
        self._thread = threading.Thread(target=self._loop, name="photo-janitor", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database may be down: try again next interval
                log.warning("search log retention pass failed: %s", exc)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
