"""Scenario `drain`: local mode (`python -m services.cli up --target ingest`, embedded Tansu broker) stopped right
after a burst of events.

SIGTERM: --drain-events small events are published to the bootstrap stack.json names, and SIGTERM follows the last
acknowledgement at once. The embedded broker keeps records in memory and dies with the process, so whatever ingest
does not consume before it exits is gone; the drain (FASHION_INGEST_DRAIN_S) must take them all. Counted: events
claimed in the ledger, the exit code, and what the log says was left.

SIGKILL (informational, no target): the same with a kill instead. Nothing drains, the broker dies with its parent,
and every record not yet consumed is lost: why production runs Kafka, and why local mode is for development.
"""

from __future__ import annotations

import re
import time

from . import catalog_events as ev
from .harness import Database, Publisher, Row, Workspace, wait_for
from .servers import png_bytes

KILL_EVENTS = 50


def _events(count: int, prefix: str) -> tuple[list[str], list[tuple[bytes, bytes, str]]]:
    ids, records = [], []
    for n in range(count):
        pid = f"{prefix}-{n:04d}"
        event_id, value = ev.upsert(pid, [png_bytes(32, (n % 256, (n * 7) % 256, 99))], title=pid)
        ids.append(event_id)
        records.append((pid.encode(), value, pid))
    return ids, records


def _start(ws: Workspace, db: Database, name: str):
    folder = ws.scenario_dir("drain")
    service = ws.start(["-m", "services.cli", "up", "--target", "ingest"],
                       ws.service_env(folder / f"data-{name}", db.url), folder / f"{name}.log")
    state = service.wait_ready()
    return service, state


def run(ws: Workspace, *, events: int) -> list[Row]:
    """SIGKILL first: it measures nothing time-bound, so the SIGTERM part's interpreter can import meanwhile."""
    killed = _sigkill(ws, KILL_EVENTS)
    return [_sigterm(ws, events), killed]


def _sigterm(ws: Workspace, events: int) -> Row:
    with Database("drain", keep=ws.keep) as db:
        service, state = _start(ws, db, "sigterm")
        ids, records = _events(events, "drain")
        publisher = Publisher(state["kafka_bootstrap"], {ev.UPLOADS_TOPIC: 3})
        publisher.send_all(ev.UPLOADS_TOPIC, records)
        stopped_at = time.monotonic()
        code = service.terminate(120)
        took = time.monotonic() - stopped_at
        publisher.close()
        claimed = len(set(ids) & db.processed().keys())
    text = service.log_text()
    left = re.findall(r"stopped with (-?\d+) records of catalog.uploads not consumed", text)
    said = (f"log: {left[-1]} records left unconsumed" if left else
            "log: drained, every record consumed" if "drained catalog.uploads" in text else "log: no drain line")
    lost = events - claimed
    return Row("drain/embedded SIGTERM", events, claimed, lost, None, ok=lost == 0 and code == 0,
               notes=f"SIGTERM right after the last ack; exit {code} after {took:.1f}s; {said}")


def _sigkill(ws: Workspace, events: int) -> Row:
    with Database("drain_kill", keep=ws.keep) as db:
        service, state = _start(ws, db, "sigkill")
        ws.prepare_spare(force=True)
        ids, records = _events(events, "killed")
        publisher = Publisher(state["kafka_bootstrap"], {ev.UPLOADS_TOPIC: 3})
        publisher.send_all(ev.UPLOADS_TOPIC, records)
        publisher.close()
        service.kill()
        broker_gone = wait_for(lambda: not _alive(state.get("broker_pid")), 10, 0.2) is not None
        claimed = len(set(ids) & db.processed().keys())
    return Row("drain/embedded SIGKILL", events, claimed, events - claimed, None, ok=True, informational=True,
               notes=f"informational: SIGKILL right after the last ack; the broker "
               f"{'died with it' if broker_gone else 'was LEFT RUNNING'} (in-memory topics gone): what was not "
               "consumed is lost, hence Kafka in production")


def _alive(pid: object) -> bool:
    from services.state_file import pid_alive

    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read().lower()
    except OSError:
        return False
