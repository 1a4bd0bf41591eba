"""The search log, written off the request path: FindSimilar answers first, a writer thread stores it.

Profiled: storing the shopper's photo and 20 impressions was about a quarter of a FindSimilar call
(two round trips and a commit), and none of it changes the answer. `QueryLog` queues each call's
`QueryLogEntry` and one background thread writes what queued up within `linger_s`, in one transaction of
two statements, so consecutive queries share a commit instead of each paying for one.

Nothing is dropped:
* A full queue (the database is down or slower than the traffic) makes `submit` wait, then fail with
  UNAVAILABLE rather than discard a query: backpressure, not loss.
* A failed write is retried with backoff; the entries stay queued meanwhile. Only an entry the database
  itself rejects (a constraint) is dropped, alone and logged.
* `close()` (the SIGTERM drain) writes everything queued before returning.
* `flush(query_id)` waits until that query is stored: RecordClick calls it, so a click on a query that is
  still queued is validated against the stored query, not refused.

The window in which another replica cannot see a query yet is one write (milliseconds); a shopper's click
comes seconds later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import sqlalchemy.exc as sa_exc
from prometheus_client import Counter, Gauge
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.repository import QueryLogEntry
from shared.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_BATCH = 256
DEFAULT_LINGER_S = 0.25
DEFAULT_SUBMIT_TIMEOUT_S = 5.0
RETRY_BACKOFF_S = (0.1, 0.5, 2.0, 5.0)

PENDING = Gauge("fashion_search_log_pending", "FindSimilar calls answered but not yet stored in the search log.")
WRITTEN = Counter("fashion_search_log_written_total", "FindSimilar calls stored in the search log.")
WRITE_FAILURES = Counter("fashion_search_log_write_failures_total",
                         "Failed search-log writes (retried; the entries stay queued).")


class QueryLog:
    """A queue of `QueryLogEntry` and the thread that writes it to the database. Thread-safe."""

    def __init__(self, session_factory: sessionmaker[Session], *, max_pending: int = DEFAULT_MAX_PENDING,
                 max_batch: int = DEFAULT_MAX_BATCH, linger_s: float = DEFAULT_LINGER_S,
                 submit_timeout_s: float = DEFAULT_SUBMIT_TIMEOUT_S) -> None:
        if max_pending < 1 or max_batch < 1 or linger_s < 0:
            raise ValueError(f"expected max_pending, max_batch >= 1 and linger_s >= 0, got {max_pending}, "
                             f"{max_batch} and {linger_s}")
        self.linger_s = linger_s
        self.sessions = session_factory
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.submit_timeout_s = submit_timeout_s
        self._cond = threading.Condition()
        self._queue: deque[QueryLogEntry] = deque()
        self._pending_ids: set[str] = set()  # queued or being written
        self._closed = False
        self._urgent = False  # someone waits in flush(): write now, do not linger
        self._thread = threading.Thread(target=self._run, name="search-log-writer", daemon=True)
        self._thread.start()

    def submit(self, entry: QueryLogEntry) -> None:
        """Queue one call's log; waits while the queue is full, UNAVAILABLE if it stays full."""
        deadline = time.monotonic() + self.submit_timeout_s
        with self._cond:
            while len(self._pending_ids) >= self.max_pending and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(f"the search log has {len(self._pending_ids)} queries waiting for the "
                                      "database; expected it to catch up, retry shortly")
                self._cond.wait(left)
            if self._closed:
                raise Unavailable("the search service is shutting down: expected a running service, retry")
            self._queue.append(entry)
            self._pending_ids.add(entry.query_id)
            PENDING.set(len(self._pending_ids))
            if len(self._queue) in (1, self.max_batch):  # the writer waits for a first entry or a full batch
                self._cond.notify_all()

    def flush(self, query_id: str | None = None, timeout: float | None = 30.0) -> bool:
        """Wait until `query_id` (or everything queued now) is stored; False if that took over `timeout`."""
        with self._cond:
            waiting = {query_id} if query_id is not None else set(self._pending_ids)
            if not waiting & self._pending_ids:
                return True
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not (waiting & self._pending_ids), timeout)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending_ids)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting entries, write what is queued, stop the thread. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("search log writer still has %d queries after %.0fs: the database is not answering",
                      self.pending(), timeout)

    # -- writer thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and drained
                self._cond.wait_for(lambda: len(self._queue) >= self.max_batch or self._closed or self._urgent,
                                    self.linger_s)
                self._urgent = False
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._write(batch)
            with self._cond:
                self._pending_ids.difference_update(entry.query_id for entry in batch)
                PENDING.set(len(self._pending_ids))
                self._cond.notify_all()

    def _write(self, batch: list[QueryLogEntry]) -> None:
        """Store a batch, retrying outages with backoff; a row the database rejects is logged and dropped alone."""
        attempt = 0
        while True:
            try:
                with self.sessions.begin() as session:
                    repository.record_queries(session, batch)
                WRITTEN.inc(len(batch))
                return
            except (InvalidInput, sa_exc.IntegrityError, sa_exc.DataError) as exc:
                if len(batch) > 1:  # find the bad entry: the others must still be stored
                    for entry in batch:
                        self._write([entry])
                    return
                WRITE_FAILURES.inc()
                log.error("dropping search log entry %s, which the database rejects: %s", batch[0].query_id, exc)
                return
            except Exception as exc:  # noqa: BLE001 (connection lost, database down: retry, the entries stay)
                WRITE_FAILURES.inc()
                delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                log.warning("search log write of %d queries failed (%s); retrying in %.1fs", len(batch), exc, delay)
                attempt += 1
                time.sleep(delay)
