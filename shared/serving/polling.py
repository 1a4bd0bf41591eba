"""A daemon thread that polls: the shape of every background loop that follows the database (model watcher,
promotion worker). A stop event, not an endless sleep loop, so shutdown is prompt and joins the thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from shared.errors import InvalidInput

log = logging.getLogger(__name__)


class PollingThread:
    """A daemon thread calling `poll_once` every `interval_s` until `stop()`; errors are logged, never fatal."""

    name = "poller"

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise InvalidInput(f"expected a polling interval > 0 seconds, got {interval_s}")
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: a long poll checks it between items of work."""
        return self._stop.is_set()

    def start(self) -> PollingThread:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.0fs", self.name, timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("%s poll failed; retrying in %.1fs", self.name, self.interval_s)
            self._stop.wait(self.interval_s)
