"""Scenario `slow`: an image host that drips one byte every 3 s and one that accepts and never answers.

An event pointing at the silent host, then (once the good record behind it is in) one pointing at the dripping
host, each followed by a good record with the same key; the silent one goes first because a worker stuck on the
dripping host would never reach it. The good records' delay counts (target --max-delay); each is waited for at
most --slow-window seconds, then the hosts are shut (a fetch blocked on them then fails), and ingest
gets a short while to settle. Each bad event must be dead-lettered exactly once: a second copy means its batch
was redelivered, i.e. the worker overran max.poll.interval, was thrown out of its group and the batch went round
again. The ingest log says how often the group was joined and whether commits failed.
"""

from __future__ import annotations

import time

from . import catalog_events as ev
from .harness import Row, Workspace, wait_for
from .rig import ingest_rig
from .servers import DripHost, SilentHost

SETTLE_S = 15.0
QUIET_S = (10.0, 6.0, 30.0)  # settling: at least, unchanged for, at most (seconds)


def _wait_quiet(log_text) -> None:
    """Until the worker's log shows no new join, batch or dead letter for a while (a redelivery shows as those)."""
    start = time.monotonic()
    least, still, most = QUIET_S

    def activity() -> int:
        text = log_text()
        return sum(text.count(s) for s in ("Successfully joined group", "ingest batch", "catalog.uploads.dlq"))

    seen, since = activity(), time.monotonic()
    while time.monotonic() - start < most:
        time.sleep(0.5)
        now = activity()
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= still and time.monotonic() - start >= least:
            return


def run(ws: Workspace, *, window_s: float, max_delay_s: float) -> list[Row]:
    with DripHost(interval_s=3.0) as drip, SilentHost() as silent, ingest_rig(ws, "slow") as rig:
        bad = {"silent host": silent.url("/silent.jpg"), "dripping host": drip.url("/drip.jpg")}
        for name, uri in bad.items():
            event_id, value = ev.raw_upsert(f"p-{name.split()[0]}", [{"uri": uri}])
            rig.publish(name, f"key-{name}", value)
            rig.good(f"after {name}", f"key-{name}")
            wait_for(lambda name=name: rig.claimed(f"after {name}"), window_s, 0.2)
        goods = [f"after {name}" for name in bad]
        in_window = rig.delays()
        drip.close()
        silent.close()
        wait_for(lambda: rig.claimed(*goods), SETTLE_S, 0.5)
        _wait_quiet(rig.service.log_text)  # a worker that lost its group rejoins and gets its batch again
        dlq = rig.dlq()
        connections = {"dripping host": drip.connections, "silent host": silent.connections}
        log_text = rig.service.log_text()
        ws.prepare_spare()
    joins = log_text.count("Successfully joined group fashion-ingest")
    commit_failures = log_text.count("failed after a rebalance") + log_text.count("CommitFailedError")
    group = (f"group joins {joins} (1 = never left), commits refused after a rebalance {commit_failures}, "
             f"connections to the hosts: {', '.join(f'{k} {v}' for k, v in connections.items())}")

    late = {g: d for g, d in in_window.items() if g in goods and (d is None or d > max_delay_s)}
    notes = ", ".join(f"{g}: {'not within ' + format(window_s, 'g') + 's window' if d is None else f'{d:.1f}s'}"
                      for g, d in in_window.items() if g in goods)
    rows = [Row("slow/good records", len(goods), len(goods) - len(late), 0, 0, ok=not late,
                notes=f"delay {notes}", details={g: in_window.get(g) for g in goods})]
    once = [n for n in bad if len(dlq.get(n, [])) == 1]
    missing = [n for n in bad if not dlq.get(n)]
    repeated = [n for n in bad if len(dlq.get(n, [])) > 1]
    detail = "; ".join([*(f"{n}: {len(dlq[n])} DLQ copies" for n in repeated), *(f"{n}: not in DLQ" for n in missing)])
    rows.append(Row("slow/dlq once", len(bad), len(once), len(missing), len(repeated),
                    ok=len(once) == len(bad) and joins <= 1 and not commit_failures,
                    notes=f"{detail + '; ' if detail else ''}{group}",
                    details={n: [c.header("error.reason")[:200] for c in dlq.get(n, [])] for n in bad}))
    return rows
