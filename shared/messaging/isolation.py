"""Poison isolation: one record that makes the handler raise must not hold back the records behind it.

Handlers dead-letter the poison they recognise (a malformed event, an undecodable image) and raise only when
something outside the record failed (the database, the model service): then the batch is retried, and
nothing is lost. A record that makes the handler raise for a reason the handler did not foresee (a bug, an
input nobody thought of) would be retried forever, and stall its partition. This finds it:

1. Handle the batch; if that raises, bisect: the longest prefix that succeeds is handled half by half, so
   the first failing record is found in about log2(n) extra calls.
2. Retry that record alone a few times (a short outage ends, a real poison stays).
3. Probe: handle the records behind it. If at least one of them succeeds, the failure is the record's own:
   it goes to `on_poison` (the dead-letter topic) and the batch moves on. If they all fail too, the sink
   is down, not the record: nothing is dead-lettered and the caller retries from that record later.

A lone failing record with nothing behind it stays undecided until more records arrive (the next poll
brings them): without a neighbour that succeeds there is no telling a poison from an outage, and
dead-lettering good records during an outage would lose them.

Records handled by the probe are committed only after the poison was dead-lettered (the caller commits the
returned prefix), so a crash in between redelivers them rather than skipping the poison unrecorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from threading import Event
from typing import TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")


def handled_prefix(records: Sequence[R], handler: Callable[[list[R]], object],
                   before_call: Callable[[], object] = lambda: None) -> tuple[int, Exception | None]:
    """Handle the longest prefix of `records` that succeeds, by bisection: (its length, what stopped it)."""
    before_call()
    try:
        handler(list(records))
        return len(records), None
    except Exception as exc:
        if len(records) == 1:
            return 0, exc
        half = len(records) // 2
        done, error = handled_prefix(records[:half], handler, before_call)
        if done < half:
            return done, error
        more, error = handled_prefix(records[half:], handler, before_call)
        return half + more, error


def handle_isolating_poison(
    records: Sequence[R],
    handler: Callable[[list[R]], object],
    on_poison: Callable[[R, Exception], object],
    *,
    stop: Event,
    retries: int = 2,
    retry_wait_s: float = 0.2,
    before_call: Callable[[], object] = lambda: None,
) -> int:
    """How many leading records of `records` are done (handled, or dead-lettered through `on_poison`).

    The caller commits that prefix and retries the rest later. `before_call` runs before every handler call
    (the consumer uses it to keep its group membership alive while it bisects).
    """
    done = 0
    while done < len(records) and not stop.is_set():
        count, error = handled_prefix(records[done:], handler, before_call)
        done += count
        if done == len(records):
            break
        record = records[done]
        if _handled_alone(record, handler, retries, retry_wait_s, stop, before_call):
            done += 1
            continue
        behind = records[done + 1:]
        if not behind:
            break  # undecided: nothing behind it to tell a poison from an outage
        probed = handle_isolating_poison(behind, handler, on_poison, stop=stop, retries=retries,
                                         retry_wait_s=retry_wait_s, before_call=before_call)
        if probed == 0:
            break  # the records behind it fail too: the sink is down, not the record
        assert error is not None
        log.warning("isolated a record the handler keeps failing on while the records behind it succeed: %s",
                    error)
        on_poison(record, error)
        done += 1 + probed
        if probed < len(behind):
            break
    return done


def _handled_alone(record: R, handler: Callable[[list[R]], object], retries: int, wait_s: float, stop: Event,
                   before_call: Callable[[], object]) -> bool:
    for _ in range(retries):
        if stop.wait(wait_s):
            return False
        before_call()
        try:
            handler([record])
            return True
        except Exception:
            continue
    return False
