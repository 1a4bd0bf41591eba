"""The embedded store's readers-writer lock: a waiting writer is not starved by a stream of readers."""

from __future__ import annotations

import threading
import time

from shared.vectorstore.rwlock import ReadWriteLock


def test_a_waiting_writer_goes_before_new_readers_and_a_reader_may_read_again() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_reading, release_first = threading.Event(), threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_reading.set()
            release_first.wait(5)
            with lock.read():  # re-entrant while the writer waits: no deadlock
                order.append("first reader again")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("late reader")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    assert first_reading.wait(5)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    deadline = time.monotonic() + 5
    while lock._writers_waiting == 0:
        assert time.monotonic() < deadline, "the writer never started waiting"
        time.sleep(0.01)
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(0.1)
    assert order == []  # the late reader waits behind the writer, the writer behind the first reader
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first reader again", "writer", "late reader"]


def test_the_writer_may_read_its_own_state() -> None:
    lock = ReadWriteLock()
    with lock.write(), lock.read(), lock.write():
        pass
    with lock.read():  # released cleanly: readers get in again
        pass
