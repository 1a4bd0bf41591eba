"""Keeps a process's loaded models in step with the model registry, so a promotion needs no restart.

`ModelWatcher` is a thread in every process with a `ModelRuntime` (model pods, search, ingest, the all-in-one
process): it loads the versions the registry says are wanted (candidate, serving, the alias target, the rollback
target) from their checkpoints, makes the registry's serving version the default, and unloads retired ones. It
lives beside the runtime, not with the admin service, because model pods run it and import no admin code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.db.models import ModelState, ModelVersion
from shared.serving.polling import PollingThread

if TYPE_CHECKING:
    from shared.vectorstore import VectorStore

log = logging.getLogger(__name__)


@dataclass
class WatchResult:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    default: str | None = None


class ModelWatcher(PollingThread):
    """Keeps a `ModelRuntime` in step with the model registry (see the module doc).

    Wanted: versions in state candidate or serving, the alias target, and the rollback target (the previous
    serving version, so a rollback needs no load and queries that read the old alias still find their model).
    Retired or rejected versions outside that set are unloaded on the second poll that finds them unwanted,
    so a query that read the alias just before a swap is not left without its model. Versions the registry
    does not know (loaded by hand) are left alone. `store` may be None in a process without the vector store.
    """

    name = "model-watcher"

    def __init__(self, runtime: Any, sessions: sessionmaker[Session], store: VectorStore | None,
                 interval_s: float = 5.0) -> None:
        super().__init__(interval_s)
        self.runtime = runtime
        self.sessions = sessions
        self.store = store
        self._unwanted: set[str] = set()
        self._failed: dict[str, str] = {}  # version -> checkpoint path that failed to load (logged once)

    def poll_once(self) -> WatchResult:
        with self.sessions() as session:
            models = {m.version: m for m in repository.list_model_versions(session)}
            previous = repository.previous_serving_version(session)
        serving = next((m.version for m in models.values() if m.state == ModelState.SERVING), None)
        target = self.store.alias_target() if self.store is not None else None
        wanted = {v for v, m in models.items() if m.state in (ModelState.CANDIDATE, ModelState.SERVING)}
        wanted |= {v for v in (target, previous.version if previous else None) if v}
        result = WatchResult()
        loaded = set(self.runtime.versions())
        for version in sorted(wanted - loaded):
            if version in models and self._load(models[version]):
                result.loaded.append(version)
        if serving is not None and serving in self.runtime.versions() and self.runtime.default_version != serving:
            self.runtime.set_default(serving)
            log.info("model %s is now the default (serving in the registry)", serving)
        result.default = self.runtime.default_version
        retired = {v for v, m in models.items() if m.state in (ModelState.RETIRED, ModelState.REJECTED)}
        unwanted = (set(self.runtime.versions()) & retired) - wanted - {self.runtime.default_version}
        for version in sorted(unwanted & self._unwanted):
            self.runtime.unload(version)
            result.unloaded.append(version)
            log.info("unloaded model %s (%s)", version, models[version].state)
        self._unwanted = unwanted - set(result.unloaded)
        return result

    def _load(self, model: ModelVersion) -> bool:
        path = model.checkpoint_path
        if self._failed.get(model.version) == path:
            return False  # already reported; retried once its registry row points elsewhere
        try:
            loaded = self.runtime.load(path)
        except Exception as exc:
            self._failed[model.version] = path
            log.warning("cannot load model %s from %s: %s", model.version, path, exc)
            return False
        if loaded.version != model.version:
            self._failed[model.version] = path
            if loaded.version != self.runtime.default_version:
                self.runtime.unload(loaded.version)
            log.warning("checkpoint %s holds model %r, expected %r as registered; not serving it", path,
                        loaded.version, model.version)
            return False
        self._failed.pop(model.version, None)
        log.info("loaded model %s (%s) from %s", model.version, model.state, path)
        return True
