"""A readers-writer lock for the embedded store: many readers or one writer, writers first, re-entrant."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ReadWriteLock:
    """Many readers (searches, upserts: Edge takes them concurrently) or one writer (opening, closing and
    dropping a shard, swapping in a built index: never under a running query).

    A waiting writer goes first: new readers wait for it. Without that, back-to-back searches kept the reader
    count above zero and an index build waited forever to be swapped in (a test that searched in a loop during a
    build hung that way). A thread that already reads may read again (no deadlock against a waiting writer), and
    the writer may read its own state.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers: dict[int, int] = {}  # thread id -> how many reads it holds
        self._writer: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                if me not in self._readers:
                    self._cond.wait_for(lambda: self._writer is None and self._writers_waiting == 0)
                self._readers[me] = self._readers.get(me, 0) + 1
            owns_read = self._writer != me
        try:
            yield
        finally:
            if owns_read:
                with self._cond:
                    self._readers[me] -= 1
                    if self._readers[me] == 0:
                        del self._readers[me]
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                self._writers_waiting += 1
                try:
                    self._cond.wait_for(lambda: self._writer is None and not self._readers)
                finally:
                    self._writers_waiting -= 1
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
