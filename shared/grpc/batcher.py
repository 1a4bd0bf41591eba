"""Dynamic batching: concurrent callers' items are grouped into one call of a batch function.

A model is much faster on one batch of N images than on N batches of one, while gRPC hands each request
to its own thread. ``DynamicBatcher`` sits between them: callers block in ``submit``/``submit_many``; one
worker thread calls ``fn`` with up to ``max_batch`` items as soon as that many are waiting, or when the
oldest waiting item has waited ``max_wait_ms``. A caller's list may be split across consecutive batches
(so every batch is as full as possible); results come back in the caller's order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from shared.errors import Unavailable
from shared.grpc.metrics import BATCH_PENDING, BATCH_QUEUE_SECONDS, BATCH_SIZE

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("fashion.batcher")


class _Request:
    """One caller's items, tracked until every item has a result or the request failed."""

    __slots__ = ("items", "results", "next", "remaining", "arrived", "error", "done", "finished")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.results: list[Any] = [None] * len(items)
        self.next = 0  # first item not yet dispatched
        self.remaining = len(items)  # items without a result yet
        self.arrived = time.monotonic()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.finished = False  # failed, timed out or complete: skip its undispatched items


class DynamicBatcher(Generic[T, R]):
    """Groups concurrent submissions into calls of ``fn(items) -> results`` (same length, same order).

    Thread-safe. An exception from ``fn`` is raised in every caller whose items were in that batch.
    ``close()`` stops accepting work, finishes (or fails, with ``drain=False``) what is queued and joins
    the worker. Usable as a context manager.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch: int,
        max_wait_ms: float,
        *,
        name: str = "default",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"expected max_batch >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"expected max_wait_ms >= 0, got {max_wait_ms}")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._pending = 0  # undispatched items in _queue
        self._closed = False
        self._size_metric = BATCH_SIZE.labels(name)
        self._queue_metric = BATCH_QUEUE_SECONDS.labels(name)
        self._pending_metric = BATCH_PENDING.labels(name)
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    # -- callers ---------------------------------------------------------------------------------------

    def submit(self, item: T, timeout: float | None = None) -> R:
        """Process one item; blocks until its batch ran. Raises TimeoutError after ``timeout`` seconds."""
        return self.submit_many([item], timeout)[0]

    def submit_many(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Process a caller's items together; results in the same order. Blocks at most ``timeout`` s."""
        request = _Request(list(items))
        if not request.items:
            return []
        with self._cond:
            if self._closed:
                raise Unavailable(f"batcher {self.name!r} is closed: the service is shutting down")
            self._queue.append(request)
            self._pending += len(request.items)
            self._pending_metric.set(self._pending)
            self._cond.notify_all()
        if not request.done.wait(timeout):
            with self._cond:
                if not request.done.is_set():
                    self._discard(request)
                    raise TimeoutError(
                        f"batcher {self.name!r}: {len(request.items)} item(s) not processed within {timeout}s"
                    )
        if request.error is not None:
            raise request.error
        return request.results

    def pending(self) -> int:
        """Items waiting to be dispatched (for tests and diagnostics)."""
        with self._cond:
            return self._pending

    def close(self, timeout: float | None = 30.0, *, drain: bool = True) -> None:
        """Stop accepting items; run (``drain``) or fail what is queued; join the worker. Idempotent."""
        with self._cond:
            self._closed = True
            if not drain:
                error = Unavailable(f"batcher {self.name!r} closed before these items were processed")
                for request in list(self._queue):
                    self._fail(request, error)
            self._cond.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)
            if self._worker.is_alive():
                log.warning("batcher worker still running after close", extra={"batcher": self.name})

    def __enter__(self) -> DynamicBatcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._execute(batch)
        finally:  # the worker never leaves callers hanging, even if it dies
            with self._cond:
                self._closed = True
                error = Unavailable(f"batcher {self.name!r} stopped")
                for request in list(self._queue):
                    self._fail(request, error)

    def _next_batch(self) -> list[tuple[_Request, int, int]] | None:
        """Wait until a batch is due (full, oldest item waited max_wait, or closing) and take it."""
        with self._cond:
            while True:
                if self._pending == 0:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                if self._pending >= self.max_batch or self._closed:
                    break
                remaining = self._queue[0].arrived + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take()

    def _take(self) -> list[tuple[_Request, int, int]]:
        batch: list[tuple[_Request, int, int]] = []
        size = 0
        now = time.monotonic()
        while self._queue and size < self.max_batch:
            request = self._queue[0]
            if request.next == 0:
                self._queue_metric.observe(now - request.arrived)
            count = min(len(request.items) - request.next, self.max_batch - size)
            batch.append((request, request.next, request.next + count))
            request.next += count
            size += count
            if request.next == len(request.items):
                self._queue.popleft()
        self._pending -= size
        self._pending_metric.set(self._pending)
        return batch

    def _execute(self, batch: list[tuple[_Request, int, int]]) -> None:
        items = [item for request, start, end in batch for item in request.items[start:end]]
        self._size_metric.observe(len(items))
        try:
            results = list(self._fn(items))
            if len(results) != len(items):
                raise RuntimeError(
                    f"batch function of {self.name!r} returned {len(results)} results for {len(items)} items"
                )
        except Exception as exc:
            with self._cond:
                for request, _, _ in batch:
                    self._fail(request, exc)
            return
        offset = 0
        with self._cond:
            for request, start, end in batch:
                request.results[start:end] = results[offset : offset + end - start]
                offset += end - start
                request.remaining -= end - start
                if request.remaining == 0 and not request.finished:
                    request.finished = True
                    request.done.set()

    # -- helpers (called with self._cond held) ---------------------------------------------------------

    def _discard(self, request: _Request) -> None:
        """Drop a request's undispatched items from the queue."""
        request.finished = True
        if request in self._queue:
            self._queue.remove(request)
            self._pending -= len(request.items) - request.next
            self._pending_metric.set(self._pending)

    def _fail(self, request: _Request, error: BaseException) -> None:
        if request.finished:
            return
        self._discard(request)
        request.error = error
        request.done.set()
