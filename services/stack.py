"""Composition root of `fashion up`: which service builds a process hosts, with settings read once.

`fashion up` (target "all") is the local default, one process hosting every service on one gRPC port plus
the ingest and click consumers, like the monolithic mode of Grafana Loki/Tempo. `fashion up --target NAME`
hosts one service, for the distributed deployment, exactly as `python -m services.NAME` does. What each
service needs (Kafka, stores, models) it asks `Resources` for, so nothing here knows which target needs what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from services.admin.settings import AdminSettings
from services.console.settings import COMPONENT, ConsoleSettings
from services.ingest.settings import IngestSettings
from services.models import MODEL_TARGETS
from services.process import Build, Process, ProcessSettings
from services.search.settings import SearchSettings
from shared.errors import InvalidInput

__all__ = ["CONSOLE", "MODEL_TARGETS", "TARGETS", "Stack", "StackSettings", "parse_targets"]

TARGETS = (*MODEL_TARGETS, "search", "ingest", "admin")
# The web console: a gRPC client of the targets above, hosted beside them by `fashion up` (not a gRPC service).
CONSOLE = "console"


@dataclass(frozen=True)
class StackSettings(ProcessSettings):
    """The process groups plus each service's own settings."""

    search: SearchSettings = field(default_factory=SearchSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)


def parse_targets(target: str) -> tuple[str, ...]:
    """"all" is every service and the console; otherwise a comma list of them."""
    names = (*TARGETS, CONSOLE) if target == "all" else tuple(t.strip() for t in target.split(","))
    unknown = [t for t in names if t not in (*TARGETS, CONSOLE)]
    if unknown:
        raise InvalidInput(f"expected targets among all, {', '.join(TARGETS)}, {CONSOLE}; got {', '.join(unknown)}")
    return names


def builds_for(settings: StackSettings, targets: tuple[str, ...],
               grpc_address: Callable[[], str] | None = None) -> dict[str, Build]:
    """Each hosted service's `build`, bound to its settings (imported only when hosted, so a model pod
    imports no admin code). The model targets share one runtime, so they are one build. The console talks to
    `grpc_address` (the process's own port, known once it serves) and shows this process's metrics."""
    builds: dict[str, Build] = {}
    models = tuple(t for t in targets if t in MODEL_TARGETS)
    if models:
        from services.models import app as models_app

        builds[",".join(models)] = partial(models_app.build, models)
    if "search" in targets:
        from services.search import app as search_app

        builds["search"] = partial(search_app.build, settings.search)
    if "ingest" in targets:
        from services.ingest import app as ingest_app

        builds["ingest"] = partial(ingest_app.build, settings.ingest)
    if "admin" in targets:
        from services.admin import app as admin_app

        builds["admin"] = partial(admin_app.build, settings.admin)
    if CONSOLE in targets:
        from services.console import app as console_app
        from services.console.health import registry_source

        # Beside services: their own port and metrics, and a taken console port is one warning, not a stack that
        # will not start. Alone (`--target console`): FASHION_CONSOLE_GRPC_ADDRESS, and a taken port fails.
        beside = len(targets) > 1
        builds[CONSOLE] = partial(console_app.build, settings.console, grpc_address=grpc_address if beside else None,
                                  metrics=[registry_source()] if beside else [], optional=beside)
    return builds


class Stack(Process):
    """`fashion up`: a Process hosting the given targets."""

    def __init__(self, settings: StackSettings, targets: tuple[str, ...] = TARGETS) -> None:
        super().__init__(settings, builds_for(settings, targets, lambda: self.address))

    @property
    def console_url(self) -> str | None:
        """Where the web console serves (None when not hosted, or its port was taken)."""
        return next((n.component.url for n in self.host.components if n.name == COMPONENT), None)
