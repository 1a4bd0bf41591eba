"""Composition root: build the services a process hosts from settings, start them, stop them in order.

`fashion up` (target "all") is the local default, one process hosting every service on one gRPC port plus
the ingest and click consumers, like the monolithic mode of Grafana Loki/Tempo. `fashion up --target NAME`
hosts one service, for the distributed deployment. The code paths are the same; only the set differs.

Model lifecycle (services/admin): every process with a model runtime runs a `ModelWatcher`, which loads the
versions the model registry wants and follows its serving version, so a promotion reaches every process
without a restart. A process hosting `ingest` or `admin` owns the vector store and runs the
`PromotionWorker`, which re-indexes and promotes runs that training left in state `reindexing`. Ingest keeps
writing new uploads to the version behind the serving alias throughout: during a re-index they land in the
old collection, and the promoter re-checks products updated since the re-index started right after the
swap (see services/admin/promotion.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.admin.settings import AdminSettings
from services.ingest.settings import IngestSettings
from services.search.settings import SearchSettings
from shared.config import GrpcServerSettings, ImageSettings, ModelSettings, StoreSettings
from shared.db.session import resolve_database_url
from shared.errors import FashionError, InvalidInput
from shared.imaging import ImageLimits

log = logging.getLogger(__name__)

MODEL_TARGETS = ("landmark", "attributes", "embedding", "analysis")
TARGETS = (*MODEL_TARGETS, "search", "ingest", "admin")
STORE_TARGETS = ("search", "ingest", "admin")  # hosts that open Postgres and the vector store
KAFKA_TARGETS = ("search", "ingest")
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackSettings:
    grpc: GrpcServerSettings = field(default_factory=GrpcServerSettings)
    stores: StoreSettings = field(default_factory=StoreSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)

    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.images.image_max_bytes, max_pixels=self.images.image_max_pixels)


def parse_targets(target: str) -> tuple[str, ...]:
    names = TARGETS if target == "all" else tuple(t.strip() for t in target.split(","))
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        raise InvalidInput(f"expected targets among all, {', '.join(TARGETS)}; got {', '.join(unknown)}")
    return names


def read_state(data_dir: Path) -> dict:
    """What a running `fashion up` wrote about itself (gRPC address, Kafka bootstrap), for the other commands."""
    path = data_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


class Stack:
    """Everything one process hosts. `start()` builds in dependency order; `stop()` tears down in reverse."""

    def __init__(self, settings: StackSettings, targets: tuple[str, ...] = TARGETS) -> None:
        self.settings = settings
        self.targets = targets
        self.broker = None
        self.bootstrap: str | None = None
        self.database_url: str | None = None
        self.sessions = None
        self.store = None
        self.runtime = None
        self.analyzer = None
        self.producer = None
        self.server: grpc.Server | None = None
        self.health = None
        self.port: int | None = None
        self.ingest_worker = None
        self.search_core = None
        self.click_consumer = None
        self.promoter = None
        self.model_watcher = None
        self.promotion_worker = None

    # -- start ------------------------------------------------------------------------------------------------
    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        s = self.settings
        s.stores.data_dir.mkdir(parents=True, exist_ok=True)
        needs_stores = bool(set(STORE_TARGETS) & set(self.targets))
        if set(KAFKA_TARGETS) & set(self.targets):
            self._start_kafka()
        if needs_stores:
            self._open_stores()
        elif s.stores.database_url:
            self._open_registry()  # a model-only process follows the model registry when it can reach it
        if set(MODEL_TARGETS) & set(self.targets) or (needs_stores and not s.ingest.analysis_address):
            self._load_models()
        elif needs_stores:
            from shared.serving.remote import RemoteAnalyzer

            self.analyzer = RemoteAnalyzer(s.ingest.analysis_address)
        self._start_grpc()
        if "ingest" in self.targets:
            self._start_ingest()
        if "search" in self.targets:
            self._start_clicks()
        if self.ingest_worker is not None or self.click_consumer is not None:
            threading.Thread(target=self._report_consumer_health, name="consumer-health", daemon=True).start()
        self._start_model_lifecycle()
        self._write_state()

    def _start_kafka(self) -> None:
        from shared.messaging import LocalBroker, ensure_topics, make_producer

        self.bootstrap = self.settings.ingest.kafka_bootstrap
        if not self.bootstrap:
            self.broker = LocalBroker(log_path=self.settings.stores.data_dir / "broker.log").start()
            self.bootstrap = self.broker.bootstrap
            log.info("started a local Kafka-protocol broker (Tansu) at %s", self.bootstrap)
        ing, srch, parts = self.settings.ingest, self.settings.search, self.settings.ingest.kafka_partitions
        ensure_topics(self.bootstrap, {ing.uploads_topic: parts, ing.dlq_topic: parts, ing.indexed_topic: parts,
                                       srch.clicks_topic: parts, srch.clicks_dlq_topic: parts})
        self.producer = make_producer(self.bootstrap)

    def _open_stores(self) -> None:
        from shared.db.session import make_engine, session_factory, upgrade
        from shared.vectorstore import VectorStore, open_client

        self.database_url = resolve_database_url(self.settings.stores)
        upgrade(self.database_url)
        self.sessions = session_factory(make_engine(self.database_url))
        location = self.settings.stores.qdrant_url or str(self.settings.stores.data_dir / "qdrant")
        self.store = VectorStore(open_client(location))

    def _open_registry(self) -> None:
        """Database sessions (and a Qdrant server's alias, if one is configured) for a model-only process.

        A local Qdrant folder is left alone: it admits one process, the one hosting ingest/search.
        """
        from shared.db.session import make_engine, session_factory, upgrade
        from shared.vectorstore import VectorStore, open_client

        self.database_url = resolve_database_url(self.settings.stores)
        upgrade(self.database_url)
        self.sessions = session_factory(make_engine(self.database_url))
        if self.settings.stores.qdrant_url:
            self.store = VectorStore(open_client(self.settings.stores.qdrant_url))

    def _load_models(self) -> None:
        from shared.serving.runtime import ModelRuntime

        m = self.settings.model
        self.runtime = ModelRuntime(engine=m.engine, max_batch=m.max_batch, max_wait_ms=m.max_wait_ms,
                                    device=m.device)
        for checkpoint, default in self._checkpoints_to_load():
            self.runtime.load(checkpoint, make_default=default)
        self.analyzer = self.runtime

    def _checkpoints_to_load(self) -> list[tuple[Path, bool]]:
        """The serving checkpoint (registered in the model registry when given), plus the version the
        `products` alias points at if that differs: search must embed with the collection's version."""
        from shared.db import repository
        from shared.fashionnet.checkpoint import ModelMetadata, read_checkpoint

        given = self.settings.model.checkpoint
        if self.sessions is None:
            if given is None:
                raise InvalidInput("expected a checkpoint: set FASHION_CHECKPOINT or pass --checkpoint")
            return [(given, True)]
        with self.sessions.begin() as session:
            if given is not None:
                meta = ModelMetadata.from_dict(read_checkpoint(given)["metadata"])
                repository.register_model_version(session, meta.version, architecture=meta.architecture,
                                                  checkpoint_path=str(Path(given).resolve()),
                                                  embedding_dim=meta.embedding_dim)
                current = repository.serving_version(session)
                if current is None:
                    repository.set_serving(session, meta.version)
                elif current.version != meta.version:
                    # A restarted or scaled-out replica must not undo a promotion: the registry decides.
                    log.warning("model %s is serving; %s is registered but not served (use `fashion promote`)",
                                current.version, meta.version)
            serving = repository.serving_version(session)
            if serving is None:
                raise InvalidInput("expected a serving model: pass --checkpoint PATH (a model.pt from "
                                   "`fashion train`) or run `make demo`, which trains one")
            wanted = [(Path(serving.checkpoint_path), True)]
            target = self.store.alias_target() if self.store is not None else None
            if target and target != serving.version:
                wanted.append((Path(repository.get_model_version(session, target).checkpoint_path), False))
        return wanted

    def _start_grpc(self) -> None:
        from services.models.server import model_servicers
        from shared.grpc import create_server, health_servicer, start_metrics_server

        g = self.settings.grpc
        servicers = []
        model_targets = [t for t in self.targets if t in MODEL_TARGETS]
        if model_targets:
            servicers += model_servicers(self.runtime, self.settings.image_limits(), model_targets)
        if "search" in self.targets:
            from services.search.clicks import KafkaClickSink
            from services.search.core import SearchCore
            from services.search.query_log import QueryLog
            from services.search.server import search_servicers

            self.search_core = SearchCore(
                self.analyzer, self.sessions, self.store, self.settings.image_limits(),
                click_sink=KafkaClickSink(self.producer, self.settings.search.clicks_topic),
                max_top_k=self.settings.search.max_top_k,
                query_log=QueryLog(self.sessions, max_pending=self.settings.search.log_max_pending,
                                   linger_s=self.settings.search.log_linger_ms / 1000))
            servicers += search_servicers(self.search_core, default_top_k=self.settings.search.default_top_k)
        if "admin" in self.targets:
            from services.admin.core import AdminCore
            from services.admin.server import admin_servicers

            admin = AdminCore(self.sessions, self._promoter(), self._retrain_trigger())
            servicers += admin_servicers(admin, self.settings.admin.token())
            if self.settings.admin.token() is None:
                log.warning("AdminService refuses every call: set FASHION_ADMIN_TOKEN to enable it")
        self.health = health_servicer()
        self.server, self.port = create_server(servicers, f"{g.host}:{g.port}", max_workers=g.max_workers,
                                               max_message_bytes=g.max_message_bytes, health=self.health)
        start_metrics_server(g.metrics_port)
        log.info("gRPC serving %s on %s:%d", ", ".join(self.targets), g.host, self.port)

    def _start_ingest(self) -> None:
        from services.ingest.consumer import IngestWorker
        from services.ingest.core import IngestCore

        ing = self.settings.ingest
        core = IngestCore(self.analyzer, self.sessions, self.store, self.settings.image_limits(),
                          event_limits=ing.event_limits(), attribute_threshold=ing.ingest_attribute_threshold,
                          analyze_timeout_s=ing.ingest_analyze_timeout_s)
        self.ingest_worker = IngestWorker(core, self.bootstrap, ing.worker_config(), producer=self.producer).start()

    def _start_clicks(self) -> None:
        from services.search.clicks import ClickConsumer

        srch = self.settings.search
        self.click_consumer = ClickConsumer(self.bootstrap, self.sessions, topic=srch.clicks_topic,
                                            dlq_topic=srch.clicks_dlq_topic, group_id=srch.clicks_group,
                                            dlq_producer=self.producer,
                                            partitions=self.settings.ingest.kafka_partitions).start()

    def _promoter(self):
        """The one Promoter of this process (AdminService and the PromotionWorker share its lock)."""
        if self.promoter is None:
            from services.admin.promotion import Promoter

            a = self.settings.admin
            self.promoter = Promoter(self.analyzer, self.sessions, self.store, batch_size=a.promotion_batch,
                                     preload_wait_s=a.preload_wait_s, limits=self.settings.image_limits(),
                                     analyze_timeout_s=self.settings.ingest.ingest_analyze_timeout_s)
        return self.promoter

    @staticmethod
    def _retrain_trigger():
        """TriggerRetrain enqueues the Celery task of services/retrain (services/retrain/trigger.py)."""
        try:
            from services.retrain.trigger import make_trigger
        except ImportError:
            log.warning("services.retrain is not installed: TriggerRetrain will answer UNAVAILABLE")
            return None
        return make_trigger()

    def _start_model_lifecycle(self) -> None:
        """ModelWatcher wherever a runtime and the registry are; PromotionWorker where ingest/admin own the store."""
        from services.admin.promotion import ModelWatcher, PromotionWorker
        from shared.serving.runtime import ModelRuntime

        a = self.settings.admin
        if isinstance(self.runtime, ModelRuntime) and self.sessions is not None:
            self.model_watcher = ModelWatcher(self.runtime, self.sessions, self.store, a.watch_interval_s).start()
        if {"ingest", "admin"} & set(self.targets) and self.store is not None:
            self.promotion_worker = PromotionWorker(self._promoter(), self.sessions, a.promotion_poll_s).start()

    def _report_consumer_health(self, interval_s: float = 5.0) -> None:
        """A consumer thread that died makes the process NOT_SERVING, so probes restart it."""
        from grpc_health.v1 import health_pb2

        while self.health is not None and self.server is not None:
            dead = [w for w in (self.ingest_worker, self.click_consumer)
                    if w is not None and getattr(w, "error", None) is not None]
            if dead:
                log.error("consumer failed (%s): health NOT_SERVING", dead[0].error)
                self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
                return
            time.sleep(interval_s)

    def _write_state(self) -> None:
        state = {"grpc": f"{self.settings.grpc.host}:{self.port}" if self.port else None,
                 "kafka_bootstrap": self.bootstrap, "database_url": self.database_url, "targets": self.targets}
        (self.settings.stores.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @property
    def address(self) -> str:
        return f"{self.settings.grpc.host}:{self.port}"

    # -- stop -------------------------------------------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Reverse order: stop taking RPCs (draining in-flight ones), stop consumers, then close the rest."""
        grace = self.settings.grpc.grace_seconds if grace is None else grace
        if self.server is not None:
            if self.health is not None:
                self.health.enter_graceful_shutdown()
            self.server.stop(grace).wait()
            self.server = None
        if self.search_core is not None:
            self.search_core.close()  # store the queries answered before the drain
            self.search_core = None
        for name in ("promotion_worker", "model_watcher", "ingest_worker", "click_consumer"):
            worker = getattr(self, name)
            if worker is not None:
                try:
                    worker.stop()
                except FashionError as exc:  # a consumer that already failed reports it; keep shutting down
                    log.warning("%s stopped with: %s", name, exc)
                setattr(self, name, None)
        if self.producer is not None:
            self.producer.flush(10)
            self.producer.close(10)
            self.producer = None
        self.promoter = None
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.store is not None:
            self.store.client.close()
            self.store = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        state = self.settings.stores.data_dir / STATE_FILE
        state.unlink(missing_ok=True)
