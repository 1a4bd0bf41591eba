"""One ingest process under test, with its own database, an external broker and a warm-up behind it: what the
poison, slow-host and pixel-flood scenarios share."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import catalog_events as ev
from .harness import Consumed, Database, Publisher, Sent, Service, Workspace, external_broker, read_topic, wait_for
from .servers import png_bytes


@dataclass
class IngestRig:
    ws: Workspace
    dir: Path
    db: Database
    bootstrap: str
    service: Service
    publisher: Publisher
    sent: dict[str, Sent] = field(default_factory=dict)  # tag -> what we published
    event_ids: dict[str, str] = field(default_factory=dict)  # tag -> event id (the records that have one)

    def publish(self, tag: str, key: str, value: bytes, event_id: str | None = None) -> Sent:
        sent = self.publisher.send(ev.UPLOADS_TOPIC, key.encode(), value, tag)
        self.sent[tag] = sent
        if event_id:
            self.event_ids[tag] = event_id
        return sent

    def good(self, tag: str, key: str, colour: tuple[int, int, int] = (30, 120, 200)) -> Sent:
        """A small valid upsert keyed `key` (so it queues behind whatever was sent with that key)."""
        event_id, value = ev.upsert(f"good-{tag}", [png_bytes(48, colour)], title=f"good {tag}")
        return self.publish(tag, key, value, event_id)

    def delays(self) -> dict[str, float | None]:
        """tag -> seconds from publish to claimed in the ledger (None: not claimed), for records with an event id."""
        processed = self.db.processed()
        out: dict[str, float | None] = {}
        for tag, event_id in self.event_ids.items():
            at = processed.get(event_id)
            out[tag] = None if at is None else at.timestamp() - self.sent[tag].sent_at
        return out

    def claimed(self, *tags: str) -> bool:
        processed = self.db.processed()
        return all(self.event_ids[t] in processed for t in tags)

    def dlq(self) -> dict[str, list[Consumed]]:
        """tag -> its copies in catalog.uploads.dlq."""
        out: dict[str, list[Consumed]] = {}
        for record in read_topic(self.bootstrap, ev.UPLOADS_DLQ_TOPIC, idle_s=1.0):
            out.setdefault(record.header("chaos.id"), []).append(record)
        return out


@contextlib.contextmanager
def ingest_rig(ws: Workspace, name: str, *, warm_up: bool = True, **env: str) -> Iterator[IngestRig]:
    """`python -m services.ingest` on an external broker and a fresh database, warmed up: the consumer has joined
    and one event went through the model, so what a scenario measures is not the first start."""
    folder = ws.scenario_dir(name)
    with external_broker(folder / "broker.log") as bootstrap, Database(name, keep=ws.keep) as db:
        publisher = Publisher(bootstrap, {ev.UPLOADS_TOPIC: 3})
        service = ws.start(["-m", "services.ingest"], ws.service_env(folder / "data", db.url, bootstrap=bootstrap,
                                                                      **env), folder / "ingest.log")
        rig = IngestRig(ws, folder, db, bootstrap, service, publisher)
        try:
            service.wait_ready()
            if warm_up:
                for i in range(3):  # three keys, so more than one partition has been fetched from before we measure
                    rig.good(f"warm-up-{i}", f"warm-up-{i}")
                if wait_for(lambda: rig.claimed("warm-up-0", "warm-up-1", "warm-up-2"), 90, 0.2) is None:
                    raise RuntimeError(f"ingest did not index the warm-up events within 90s; log {service.log_path}")
                time.sleep(0.5)
            yield rig
        finally:
            publisher.close()
            service.terminate(30)
