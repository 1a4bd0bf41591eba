"""What every chaos scenario stands on: a workspace, a serving checkpoint, a synthetic catalogue, throw-away
Postgres databases, services started as real processes (`python -m services.<name>`), and Kafka helpers that
publish tagged records and read a topic back.

Nothing here imports a service's internals beyond the public helpers a producer would use (events.py builds
the events, shared.messaging makes the clients), so the scenarios measure the processes from the outside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .processes import Service, service_args, tail

__all__ = ["ROOT", "Consumed", "Database", "Publisher", "Row", "Sent", "Service", "Workspace", "committed_offsets",
           "external_broker", "quiet_clients", "read_topic", "service_args", "tail", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
TAG_HEADER = "chaos.id"  # every record we publish carries one; DLQ copies keep the original headers

log = logging.getLogger("chaos")

T = TypeVar("T")


@dataclass
class Row:
    """One line of the results table: a scenario's check, what was tried and what came out of it."""

    scenario: str
    tried: int
    survived: int
    lost: int | None = None
    duplicated: int | None = None
    ok: bool = False
    notes: str = ""
    informational: bool = False  # measured and shown, no target (counts as neither pass nor fail)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wait_for(condition: Callable[[], T], timeout: float, interval: float = 0.25) -> T | None:
    """The first truthy value of `condition()` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# -- the workspace: checkpoint and catalogue, cached between runs -------------------------------------------------


class Workspace:
    """var/chaos (or --workdir): `model/` and `catalog/` are kept between runs, each run gets `runs/<stamp>/`."""

    def __init__(self, root: Path, *, extra_env: Mapping[str, str] | None = None, keep: bool = False,
                 cold: bool = False) -> None:
        self.root = root
        self.run_dir = root / "runs" / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(extra_env or {})
        self.keep = keep
        self.cold = cold  # every process a plain `python -m ...` start: no held starts, no spares
        self.spare_wanted = False  # set by the runner while another scenario follows
        self._checkpoint: Path | None = None
        self._spare: Service | None = None
        self._spares = 0
        self.services: list[Service] = []

    def checkpoint(self) -> Path:
        """An untrained FashionNet on the packaged ImageNet backbone at 64 px, as the test suite's tiny one.

        Retrieval quality is irrelevant here; what counts is that loading and analysing are real. Cached (and so
        is the ONNX export the services make next to it on first start)."""
        if self._checkpoint is None:
            path = self.root / "model" / "model.pt"
            if not path.is_file():
                import torch

                from shared.data.synth import ATTRIBUTES, CATEGORIES
                from shared.fashionnet import default_metadata, save_checkpoint
                from shared.fashionnet.checkpoint import build_model
                from shared.vocabulary import Attribute, Category, ClothesType

                torch.manual_seed(0)
                meta = default_metadata("fashionnet_efficientnet_lite0",
                                        [Category(c.name, ClothesType(c.clothes_type)) for c in CATEGORIES],
                                        [Attribute(name, group) for name, group in ATTRIBUTES],
                                        version="chaos-1", embedding_dim=32, input_size=64)
                save_checkpoint(path, build_model(meta, pretrained=True).eval(), meta)
            self._checkpoint = path
        return self._checkpoint

    def catalogue(self, items: int, seed: int = 7) -> dict[str, list[bytes]]:
        """product id -> the JPEG bytes of its synthetic pictures (shop and consumer photos alike: any distinct
        picture of the item will do as an upload)."""
        from shared.data.synth import generate

        root = self.root / "catalog" / f"c2s-{items}-s{seed}"
        if not (root / "Eval" / "list_eval_partition.txt").is_file():
            generate("consumer2shop", root, items, seed=seed, image_size=96, workers=1, progress=False)
        pictures: dict[str, list[bytes]] = {}
        for path in sorted((root / "img").rglob("*.jpg")):
            pictures.setdefault(path.parent.name, []).append(path.read_bytes())
        return pictures

    def scenario_dir(self, name: str) -> Path:
        path = self.run_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def service_env(self, data_dir: Path, database_url: str, *, bootstrap: str | None = None,
                    **extra: str) -> dict[str, str]:
        """The environment a service process starts with: this worktree first on the path, its own data dir
        and database, port 0, the chaos checkpoint; FASHION_* variables of the caller do not leak in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
        env.update({"PYTHONPATH": str(ROOT), "FASHION_DATA_DIR": str(data_dir), "FASHION_DATABASE_URL": database_url,
                    "FASHION_PORT": "0", "FASHION_CHECKPOINT": str(self.checkpoint()), "FASHION_DEVICE": "cpu",
                    "FASHION_GRACE_SECONDS": "2",
                    # As a deployment sets it: the catalogue's own folder, so "outside the catalogue" means it
                    # (the default, the working directory, would hold this run's files too).
                    "FASHION_IMAGE_ROOTS": str(self.root / "catalog")})
        if bootstrap:
            env["FASHION_KAFKA_BOOTSTRAP"] = bootstrap
        env.update(extra)
        env.update(self.extra_env)  # --env KEY=VALUE: e.g. the settings of a fix being measured
        return env

    def start(self, args: Sequence[str], env: Mapping[str, str], log_path: Path, *, held: bool = False) -> Service:
        """A service process running `args` (`held`: imports done, not yet released; see processes.py). Takes the
        spare when there is one."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive and args[0] == "-m":
            spare.args, spare.env, spare.log_path = list(args), dict(env), log_path
            return spare if held else spare.release()
        if spare is not None:
            spare.kill()
        service = Service(args, env, log_path, held=held, cold=self.cold).start()
        self.services.append(service)
        return service

    def prepare_spare(self, *, force: bool = False) -> None:
        """Start a held interpreter for the next service start, now that nothing is being measured (only when a
        scenario follows, or `force`; never with --cold)."""
        if self.cold or not (force or self.spare_wanted) or (self._spare is not None and self._spare.alive):
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_")}
        env["PYTHONPATH"] = str(ROOT)
        self._spares += 1
        self._spare = Service(["-m", "services.ingest"], env, self.run_dir / f"spare-{self._spares}.log",
                              held=True).start()
        self.services.append(self._spare)

    def cleanup(self, *, keep_spare: bool = False) -> None:
        """SIGKILL every process this run started that still runs (each by its own pid), but the spare if asked."""
        spare = self._spare if keep_spare and self._spare is not None and self._spare.held else None
        for service in self.services:
            if service is not spare:
                service.kill()
        self.services = [spare] if spare is not None else []
        self._spare = spare


# -- databases --------------------------------------------------------------------------------------------------


class Database:
    """A Postgres database of its own (`fashion_chaos_<name>_<hex>`), dropped on exit unless kept."""

    def __init__(self, name: str, *, keep: bool = False) -> None:
        self.url = f"{PG_ADMIN_URL}/fashion_chaos_{name}_{uuid.uuid4().hex[:8]}"
        self.keep = keep
        self._engine: Any = None

    def __enter__(self) -> Database:
        from shared.db.session import create_database_if_missing

        create_database_if_missing(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if not self.keep:
            from shared.db.session import drop_database

            with contextlib.suppress(Exception):
                drop_database(self.url)

    def rows(self, sql: str, **params: Any) -> list[tuple]:
        """Rows of a query; [] while the services have not created the tables yet."""
        import sqlalchemy as sa
        from sqlalchemy.exc import ProgrammingError

        if self._engine is None:
            from shared.db.session import make_engine

            self._engine = make_engine(self.url)
        try:
            with self._engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql), params)]
        except ProgrammingError:
            return []

    def processed(self) -> dict[str, datetime]:
        """event id -> when the ingest worker claimed it (the `processed_events` ledger)."""
        return {e: at for e, at in self.rows("select event_id, processed_at from processed_events")}


# -- Kafka ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A record we published: its tag, where it landed and when we sent it (wall clock, to compare with the
    ledger's processed_at)."""

    tag: str
    key: bytes
    partition: int
    offset: int
    sent_at: float


class Publisher:
    """One producer, records tagged with `chaos.id` so DLQ copies can be matched to what we sent."""

    def __init__(self, bootstrap: str, topics: Mapping[str, int] | None = None) -> None:
        from shared.messaging import ensure_topics, make_producer

        self.bootstrap = bootstrap
        if topics:
            ensure_topics(bootstrap, dict(topics))
        self.producer = make_producer(bootstrap, client_id="chaos-publisher", linger_ms=0)

    def send(self, topic: str, key: bytes, value: bytes, tag: str) -> Sent:
        sent_at = time.time()
        meta = self.producer.send(topic, key=key, value=value, headers=[(TAG_HEADER, tag.encode())]).get(timeout=30)
        return Sent(tag, key, meta.partition, meta.offset, sent_at)

    def send_all(self, topic: str, records: Sequence[tuple[bytes, bytes, str]]) -> list[Sent]:
        """(key, value, tag) records sent back to back, then every acknowledgement awaited."""
        sent_at = time.time()
        futures = [(tag, key, self.producer.send(topic, key=key, value=value, headers=[(TAG_HEADER, tag.encode())]))
                   for key, value, tag in records]
        self.producer.flush(timeout=30)
        return [Sent(tag, key, (m := f.get(timeout=30)).partition, m.offset, sent_at) for tag, key, f in futures]

    def close(self) -> None:
        self.producer.close(timeout=10)


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def header(self, name: str) -> str:
        return self.headers.get(name, b"").decode("utf-8", errors="replace")


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 1.5, timeout_s: float = 30.0) -> list[Consumed]:
    """Every record of `topic` from the beginning (no group, nothing committed), until `idle_s` passes without one.

    Idle time rather than end offsets: Tansu answers ListOffsets with stale offsets (see BatchConsumer.lag).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="chaos-reader", key_deserializer=None, value_deserializer=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Consumed] = []
        deadline, last = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            for _, messages in consumer.poll(timeout_ms=300).items():
                last = time.monotonic()
                out.extend(Consumed(m.partition, m.offset, m.key, m.value,
                                    {k: v or b"" for k, v in (m.headers or [])}) for m in messages)
        return out
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str,
                      partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int] | None:
    """The group's committed offset of each (topic, partition) (-1: none yet), or None when the broker would not
    say. An OffsetFetch from a consumer that never subscribes, so the group is not disturbed."""
    from kafka import KafkaConsumer, TopicPartition

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                 client_id="chaos-offsets")
    except Exception:  # noqa: BLE001 - a probe: no answer is an answer
        return None
    try:
        return {(t, p): (consumer.committed(TopicPartition(t, p)) or -1) for t, p in partitions}
    except Exception:  # noqa: BLE001
        return None
    finally:
        consumer.close(autocommit=False)


@contextlib.contextmanager
def external_broker(log_path: Path) -> Iterator[str]:
    """A Tansu broker owned by this (chaos) process, so killing a service does not take the broker with it."""
    from shared.messaging import LocalBroker

    broker = LocalBroker(log_path=log_path).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def quiet_clients() -> None:
    """kafka-python logs every reconnect at WARNING/ERROR; the services' logs are where errors matter."""
    for name in ("kafka", "kafka.conn", "kafka.client", "kafka.coordinator", "kafka.producer", "kafka.consumer"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
