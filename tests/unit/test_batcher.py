"""DynamicBatcher: grouping, max_batch, order, error propagation, timeouts and a clean close.

Determinism: grouping is asserted by holding the batch function on a gate while submissions queue up
(visible through ``pending()``), never by racing a short max_wait against thread start-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from shared.errors import Unavailable
from shared.grpc.batcher import DynamicBatcher

LONG_WAIT_MS = 10_000.0  # batches only leave full, on close, or after the gate: never by this timer


class Recorder:
    """A batch function that records the batches it sees and can be held on a gate."""

    def __init__(self, fail_when: Callable[[list[int]], bool] = lambda items: False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._fail_when = fail_when

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        if self._fail_when(items):
            raise ValueError(f"bad batch {items}")
        return [item * 10 for item in items]

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_concurrent_submissions_share_one_batch() -> None:
    fn = Recorder()
    with (
        DynamicBatcher(fn, max_batch=6, max_wait_ms=LONG_WAIT_MS, name="t-group") as batcher,
        ThreadPoolExecutor(6) as pool,
    ):
        results = list(pool.map(batcher.submit, range(6)))
    assert results == [0, 10, 20, 30, 40, 50]
    assert fn.sizes == [6]  # left as soon as full, long before max_wait


def test_items_queued_behind_a_running_batch_are_grouped_up_to_max_batch() -> None:
    fn = Recorder()
    fn.gate.clear()
    with DynamicBatcher(fn, max_batch=4, max_wait_ms=0, name="t-queue") as batcher, ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.submit, 100)
        assert fn.entered.wait(5)
        later = [pool.submit(batcher.submit, i) for i in range(7)]
        wait_until(lambda: batcher.pending() == 7)
        fn.gate.set()
        assert first.result(5) == 1000
        assert sorted(f.result(5) for f in later) == [i * 10 for i in range(7)]
    assert fn.sizes == [1, 4, 3]


def test_max_wait_releases_a_partial_batch() -> None:
    fn = Recorder()
    with DynamicBatcher(fn, max_batch=64, max_wait_ms=30, name="t-wait") as batcher:
        started = time.monotonic()
        assert batcher.submit(7, timeout=5) == 70
        assert time.monotonic() - started >= 0.025
    assert fn.sizes == [1]


def test_a_list_is_split_at_max_batch_and_returned_in_order() -> None:
    fn = Recorder()
    with DynamicBatcher(fn, max_batch=4, max_wait_ms=0, name="t-split") as batcher:
        assert batcher.submit_many(list(range(10)), timeout=5) == [i * 10 for i in range(10)]
        assert batcher.submit_many([]) == []
    assert fn.sizes == [4, 4, 2]  # one caller's list is queued at once, so the split is deterministic


def test_lists_from_two_callers_keep_their_own_order() -> None:
    fn = Recorder()
    fn.gate.clear()
    with DynamicBatcher(fn, max_batch=8, max_wait_ms=0, name="t-lists") as batcher, ThreadPoolExecutor(3) as pool:
        blocker = pool.submit(batcher.submit, 0)
        assert fn.entered.wait(5)
        a = pool.submit(batcher.submit_many, [1, 2, 3])
        wait_until(lambda: batcher.pending() == 3)
        b = pool.submit(batcher.submit_many, [4, 5])
        wait_until(lambda: batcher.pending() == 5)
        fn.gate.set()
        assert blocker.result(5) == 0
        assert a.result(5) == [10, 20, 30]
        assert b.result(5) == [40, 50]
    assert fn.batches == [[0], [1, 2, 3, 4, 5]]


def test_an_error_reaches_every_caller_of_that_batch_only() -> None:
    fn = Recorder(fail_when=lambda items: 13 in items)
    with DynamicBatcher(fn, max_batch=3, max_wait_ms=LONG_WAIT_MS, name="t-error") as batcher:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(batcher.submit, i) for i in (11, 12, 13)]
            errors = [f.exception(5) for f in futures]
        assert all(isinstance(e, ValueError) and "bad batch" in str(e) for e in errors)
        assert batcher.submit_many([1, 2, 3], timeout=5) == [10, 20, 30]  # the worker survived


def test_a_wrong_number_of_results_is_an_error() -> None:
    batcher = DynamicBatcher(lambda items: items[:-1], max_batch=2, max_wait_ms=0, name="t-len")
    with batcher, pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        batcher.submit_many([1, 2], timeout=5)


def test_timeout_raises_and_drops_the_items() -> None:
    fn = Recorder()
    fn.gate.clear()
    with DynamicBatcher(fn, max_batch=4, max_wait_ms=0, name="t-timeout") as batcher, ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(batcher.submit, 1)
        assert fn.entered.wait(5)
        with pytest.raises(TimeoutError, match="not processed within"):
            batcher.submit_many([2, 3], timeout=0.05)
        assert batcher.pending() == 0
        fn.gate.set()
        assert blocker.result(5) == 10
    assert fn.batches == [[1]]  # the timed-out items never reached the model


def test_close_drains_queued_items_without_waiting_for_max_wait() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch=100, max_wait_ms=LONG_WAIT_MS, name="t-close")
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(batcher.submit, i) for i in (1, 2)]
        wait_until(lambda: batcher.pending() == 2)
        started = time.monotonic()
        batcher.close(timeout=5)
        assert time.monotonic() - started < 2
        assert sorted(f.result(1) for f in futures) == [10, 20]
    with pytest.raises(Unavailable, match="closed"):
        batcher.submit(3)
    batcher.close()  # idempotent


def test_close_without_drain_fails_queued_callers() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = DynamicBatcher(fn, max_batch=1, max_wait_ms=0, name="t-nodrain")
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(batcher.submit, 1)
        assert fn.entered.wait(5)
        queued = pool.submit(batcher.submit, 2)
        wait_until(lambda: batcher.pending() == 1)
        closer = threading.Thread(target=batcher.close, kwargs={"timeout": 5, "drain": False})
        closer.start()
        assert isinstance(queued.exception(5), Unavailable)
        fn.gate.set()
        closer.join(5)
        assert not closer.is_alive()
        assert running.result(5) == 10


def test_invalid_arguments_and_batch_size_metric() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        DynamicBatcher(lambda items: items, max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        DynamicBatcher(lambda items: items, max_batch=1, max_wait_ms=-1)
    with DynamicBatcher(lambda items: items, max_batch=4, max_wait_ms=0, name="t-metric") as batcher:
        batcher.submit_many([1, 2, 3, 4, 5], timeout=5)
    labels = {"batcher": "t-metric"}
    assert REGISTRY.get_sample_value("fashion_batch_size_count", labels) == 2
    assert REGISTRY.get_sample_value("fashion_batch_size_sum", labels) == 5
