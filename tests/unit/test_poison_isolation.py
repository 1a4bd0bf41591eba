"""Poison isolation's decisions, on plain lists (the real consumer is exercised in tests/integration)."""

from __future__ import annotations

import threading

from shared.messaging.isolation import handle_isolating_poison, handled_prefix


class Sink:
    """Applies integers; raises on the poison ones, or on everything while `down`."""

    def __init__(self, poison: set[int] = frozenset(), down: bool = False) -> None:
        self.poison, self.down = set(poison), down
        self.applied: list[int] = []
        self.calls = 0

    def __call__(self, batch: list[int]) -> None:
        self.calls += 1
        if self.down or any(r in self.poison for r in batch):
            raise RuntimeError(f"cannot apply {batch}")
        self.applied.extend(batch)


def run(records, sink, **kw):
    dead: list[int] = []
    done = handle_isolating_poison(records, sink, lambda r, exc: dead.append(r), stop=threading.Event(),
                                   retry_wait_s=0, **kw)
    return done, dead


def test_a_clean_batch_is_one_call() -> None:
    sink = Sink()
    assert run(list(range(8)), sink) == (8, [])
    assert sink.calls == 1 and sink.applied == list(range(8))


def test_bisection_handles_the_prefix_before_the_first_failure() -> None:
    sink = Sink(poison={5})
    count, error = handled_prefix(list(range(8)), sink)
    assert count == 5 and "[5]" in str(error)
    assert sink.applied == [0, 1, 2, 3, 4]
    assert sink.calls <= 1 + 2 * 3  # about log2(n) extra calls, not one per record


def test_a_poison_is_dead_lettered_and_every_good_record_applied_in_order() -> None:
    sink = Sink(poison={3, 6})
    done, dead = run(list(range(10)), sink)
    assert done == 10 and sorted(dead) == [3, 6]  # 6 is found while probing behind 3
    assert sink.applied == [0, 1, 2, 4, 5, 7, 8, 9]


def test_an_outage_dead_letters_nothing() -> None:
    sink = Sink(down=True)
    assert run(list(range(6)), sink) == (0, [])


def test_a_lone_failure_with_nothing_behind_it_stays_undecided() -> None:
    sink = Sink(poison={4})
    assert run(list(range(5)), sink) == (4, [])  # the caller retries record 4 with what arrives next
    assert run([4, 5], sink) == (2, [4])


def test_a_transient_failure_is_retried_not_dead_lettered() -> None:
    fails = {2: 2}  # record 2 fails twice, then applies

    def flaky(batch: list[int]) -> None:
        for r in batch:
            if fails.get(r, 0) > 0:
                fails[r] -= 1
                raise RuntimeError("blip")
        applied.extend(batch)

    applied: list[int] = []
    dead: list[int] = []
    done = handle_isolating_poison(list(range(5)), flaky, lambda r, e: dead.append(r), stop=threading.Event(),
                                   retries=3, retry_wait_s=0)
    assert (done, dead) == (5, [])
    assert sorted(set(applied)) == [0, 1, 2, 3, 4]
