"""A readers-writer lock for the embedded store: many readers or one writer, re-entrant for the writer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ReadWriteLock:
    """Many readers (searches, upserts: Edge takes them concurrently) or one writer (opening, closing and
    dropping a shard, which must not happen under a running query)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._depth = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:  # the writer may read its own state
                self._cond.wait_for(lambda: self._writer is None)
                self._readers += 1
        try:
            yield
        finally:
            if self._writer != me:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._cond.wait_for(lambda: self._writer is None and self._readers == 0)
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()
