"""What the services of one process share, opened on first use and closed in reverse: the Kafka bootstrap (a
local Tansu broker when none is configured) and its producer, the database, the vector store, and the models.

A service's `build` asks for what it needs (`resources.sessions()`, `resources.analyzer()`, ...); nothing is
opened that no hosted service asked for, so there is no "which targets need what" table anywhere. The host
starts this object first and stops it last, after every service that uses it has stopped.

Models: a process with a local `ModelRuntime` loads the registry's serving version (and the version behind
the `products` alias, which search must embed with) and runs a `ModelWatcher`, which follows promotions
without a restart. A process given `analysis_address` calls a remote AnalysisService instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import KafkaSettings, ModelSettings, StoreSettings
from shared.errors import InvalidInput

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from sqlalchemy.orm import Session, sessionmaker

    from shared.serving.analyzer import Analyzer
    from shared.serving.runtime import ModelRuntime
    from shared.vectorstore import VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceSettings:
    """The infrastructure groups every service of a process shares (each service reads its own knobs)."""

    stores: StoreSettings = field(default_factory=StoreSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    model: ModelSettings = field(default_factory=ModelSettings)


class Resources:
    def __init__(self, settings: ResourceSettings) -> None:
        self.settings = settings
        self._closers: list[tuple[str, Callable[[], object]]] = []
        self._bootstrap: str | None = None
        self.broker_pid: int | None = None  # the local broker's, recorded in stack.json
        self._producer: KafkaProducer | None = None
        self._database_url: str | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._store: VectorStore | None = None
        self._runtime: ModelRuntime | None = None
        self._analyzer: Analyzer | None = None
        settings.stores.data_dir.mkdir(parents=True, exist_ok=True)

    # -- Kafka --------------------------------------------------------------------------------------------------
    def bootstrap(self) -> str:
        if self._bootstrap is None:
            self._bootstrap = self.settings.kafka.kafka_bootstrap
            if not self._bootstrap:
                from shared.messaging import LocalBroker

                broker = LocalBroker(log_path=self.settings.stores.data_dir / "broker.log").start()
                self._closers.append(("broker", broker.stop))
                self._bootstrap, self.broker_pid = broker.bootstrap, broker.pid
                log.info("started a local Kafka-protocol broker (Tansu) at %s", self._bootstrap)
        return self._bootstrap

    def producer(self) -> KafkaProducer:
        """The process's one producer (clicks, DLQs, announcements), flushed before the broker stops."""
        if self._producer is None:
            from shared.messaging import make_producer

            producer = self._producer = make_producer(self.bootstrap())

            def close() -> None:
                producer.flush(10)
                producer.close(10)

            self._closers.append(("producer", close))
        return self._producer

    # -- stores -------------------------------------------------------------------------------------------------
    @property
    def database_url(self) -> str | None:
        """The database URL once opened (None before)."""
        return self._database_url

    @property
    def kafka_bootstrap(self) -> str | None:
        """The Kafka bootstrap once resolved (None before, or in a process without Kafka)."""
        return self._bootstrap

    def sessions(self) -> sessionmaker[Session]:
        if self._sessions is None:
            from shared.db.session import make_engine, resolve_database_url, session_factory, upgrade

            self._database_url = resolve_database_url(self.settings.stores)
            upgrade(self._database_url)
            engine = make_engine(self._database_url)
            self._closers.append(("database", engine.dispose))
            self._sessions = session_factory(engine)
        return self._sessions

    def registry(self) -> sessionmaker[Session] | None:
        """Sessions when a database is configured (a model-only process follows the registry when it can
        reach one); None for a model process started with only a checkpoint."""
        if self._sessions is None and self.settings.stores.database_url:
            self.sessions()
        return self._sessions

    def store(self) -> VectorStore:
        """The vector store: a Qdrant server when configured, else Qdrant Edge in the data folder (one process)."""
        if self._store is None:
            from shared.vectorstore import open_store

            stores = self.settings.stores
            store = self._store = open_store(stores.qdrant_url or stores.data_dir / "qdrant",
                                             quantize_int8=stores.qdrant_int8)
            self._closers.append(("vector store", store.close))
        return self._store

    def shared_store(self) -> VectorStore | None:
        """The vector store if this process may open it without owning it: already open, or a server.
        A Qdrant Edge folder admits one process, the one hosting search/ingest/admin."""
        if self._store is None and self.settings.stores.qdrant_url:
            return self.store()
        return self._store

    # -- models -------------------------------------------------------------------------------------------------
    def runtime(self) -> ModelRuntime:
        """The local models: the serving version and the alias's version, kept current by a ModelWatcher."""
        if self._runtime is None:
            from shared.serving.runtime import ModelRuntime
            from shared.serving.watcher import ModelWatcher

            m = self.settings.model
            runtime = ModelRuntime(engine=m.engine, max_batch=m.max_batch, max_wait_ms=m.max_wait_ms,
                                   device=m.device, garment_threshold=m.garment_threshold)
            self._closers.append(("models", runtime.close))
            self._runtime = runtime
            registry, store = self.registry(), self.shared_store()
            for checkpoint, default in serving_checkpoints(m.checkpoint, registry, store):
                runtime.load(checkpoint, make_default=default)
            if registry is not None:
                watcher = ModelWatcher(runtime, registry, store, m.watch_interval_s).start()
                self._closers.append(("model watcher", watcher.stop))
        return self._runtime

    def analyzer(self) -> Analyzer:
        """What analyses images for search, ingest and re-index: the remote AnalysisService when
        `analysis_address` is set, else the local runtime."""
        if self._analyzer is None:
            address = self.settings.model.analysis_address
            if address:
                from shared.serving.remote import RemoteAnalyzer

                self._analyzer = RemoteAnalyzer(address)
            else:
                self._analyzer = self.runtime()
        return self._analyzer

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> Resources:
        return self  # opened on first use, while the services are built

    def stop(self) -> None:
        """Close in reverse order of opening, each once."""
        while self._closers:
            name, close = self._closers.pop()
            try:
                close()
            except Exception as exc:
                log.warning("closing %s failed: %s", name, exc)
        self._producer = self._sessions = self._store = self._runtime = self._analyzer = None


def serving_checkpoints(given: Path | None, registry: Any, store: VectorStore | None) -> list[tuple[Path, bool]]:
    """The checkpoints a model runtime loads: (path, make_default).

    Without a registry: the given checkpoint. With one: the given checkpoint is registered (and served, when
    nothing is yet), then the registry's serving version is the default, plus the version the `products`
    alias points at if that differs (search must embed with the collection's version).
    """
    from shared.db import repository
    from shared.fashionnet.checkpoint import ModelMetadata, read_checkpoint

    if registry is None:
        if given is None:
            raise InvalidInput("expected a checkpoint: set FASHION_CHECKPOINT or pass --checkpoint")
        return [(given, True)]
    with registry.begin() as session:
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
            raise InvalidInput("expected a serving model: pass --checkpoint PATH (a model.pt from `fashion train`), "
                               "or serve what `make demo` built with `fashion up --demo`")
        wanted = [(Path(serving.checkpoint_path), True)]
        target = store.alias_target() if store is not None else None
        if target and target != serving.version:
            wanted.append((Path(repository.get_model_version(session, target).checkpoint_path), False))
    return wanted
