"""What every chaos scenario stands on: a workspace, a serving checkpoint, a synthetic catalogue, throw-away
Postgres databases, services started as real processes (`python -m services.<name>`), and Kafka helpers that
publish tagged records and read a topic back.

Nothing here imports a service's internals beyond the public helpers a producer would use (events.py builds
the events, shared.messaging makes the clients), so the scenarios measure the processes from the outside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

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

    def __init__(self, root: Path, *, extra_env: Mapping[str, str] | None = None, keep: bool = False) -> None:
        self.root = root
        self.run_dir = root / "runs" / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(extra_env or {})
        self.keep = keep
        self._checkpoint: Path | None = None
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
                    "FASHION_GRACE_SECONDS": "2"})
        if bootstrap:
            env["FASHION_KAFKA_BOOTSTRAP"] = bootstrap
        env.update(extra)
        env.update(self.extra_env)  # --env KEY=VALUE: e.g. the settings of a fix being measured
        return env

    def start(self, args: Sequence[str], env: Mapping[str, str], log_path: Path, *, held: bool = False) -> Service:
        service = Service(args, env, log_path, held=held).start()
        self.services.append(service)
        return service

    def cleanup(self) -> None:
        """SIGKILL every process this run started that still runs (each by its own pid)."""
        for service in self.services:
            service.kill()


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


# -- service processes ------------------------------------------------------------------------------------------


# A held start: a fresh interpreter imports what the service's entry point imports, waits for a line on stdin, then
# runs the entry point exactly as `python -m MODULE ARGS...` would. A restart loop spends most of its time importing
# torch; holding the next incarnation lets that overlap with the life of the one about to be killed.
_HELD_ENTRY = ("import importlib, runpy, sys\n"
               "for name in sys.argv[2].split(','):\n"
               "    importlib.import_module(name)\n"
               "sys.stdin.readline()\n"
               "sys.argv = [sys.argv[1], *sys.argv[3:]]\n"
               "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")
_PRELOAD = {"services.ingest": "services.ingest.app,services.ingest.settings,services.process",
            "services.search": "services.search.app,services.search.settings,services.process",
            "services.cli": "services.cli,services.stack,services.ingest.app,services.search.app"}


class Service:
    """One service as a real process; ready once its stack.json names its pid (written when serving).

    `held=True` starts the interpreter but holds it before the entry point runs (see _HELD_ENTRY) until `release()`;
    `args` must then be `-m MODULE ...`."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path, *, held: bool = False) -> None:
        if held:
            if args[0] != "-m":
                raise ValueError(f"a held start runs a module: expected -m MODULE ..., got {list(args)}")
            args = ["-c", _HELD_ENTRY, args[1], _PRELOAD.get(args[1], args[1]), *args[2:]]
        self.args = [PYTHON, *args]
        self.held = held
        self.env = dict(env)
        self.log_path = log_path
        self.data_dir = Path(env["FASHION_DATA_DIR"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {}
        self.started_at = 0.0

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.PIPE if self.held else subprocess.DEVNULL,
                                         start_new_session=True)
        self.started_at = time.monotonic()
        return self

    def release(self) -> Service:
        """Let a held start run its entry point."""
        if self.held and self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"go\n")
                self.proc.stdin.close()
            self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        """stack.json of this process (pid, grpc, kafka_bootstrap); raises when it exits or times out."""
        path = self.data_dir / "stack.json"

        def ready() -> dict[str, Any] | None:
            if not self.alive:
                raise RuntimeError(f"{' '.join(self.args[1:])} exited with {self.proc.returncode} before serving; "
                                   f"log {self.log_path}:\n{tail(self.log_path)}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(path.read_text())
                if state.get("pid") == self.pid:
                    return state
            return None

        state = wait_for(ready, timeout, 0.2)
        if state is None:
            self.kill()
            raise RuntimeError(f"{' '.join(self.args[1:])} did not serve within {timeout:.0f}s; log {self.log_path}:"
                               f"\n{tail(self.log_path)}")
        self.state = state
        return state

    def kill(self) -> None:
        """SIGKILL (what a crash or the OOM killer does); waits for the process to be gone."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; the exit code, or None when it had to be killed after `timeout`."""
        if not self.alive:
            return self.proc.returncode if self.proc is not None else None
        os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def memory_kib(self, field_name: str = "VmHWM") -> int | None:
        """A /proc/<pid>/status figure in KiB (VmHWM: peak resident set so far; VmRSS: now)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "<no log>"


def service_args(targets: str) -> list[str]:
    """`python -m services.<name>` for one target, `python -m services.cli up --target a,b` for several."""
    if "," in targets:
        return ["-m", "services.cli", "up", "--target", targets]
    return ["-m", f"services.{targets}"]


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
