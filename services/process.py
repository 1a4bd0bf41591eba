"""One process hosting services: the shared resources, each hosted service's build, one gRPC server.

Start order: resources (opened while the services are built), each service's parts, then the gRPC server,
so the process serves only once everything behind it runs. Stop is the reverse: health NOT_SERVING and
drain in-flight RPCs, stop consumers and pollers, then close producer, models, stores and broker.

`services/stack.py` uses it for `fashion up` (any set of targets); each `services/<name>/__main__.py` uses it
with its own build alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from services.resources import Resources, ResourceSettings
from services.state_file import StateFile
from shared.config import GrpcServerSettings, ImageSettings
from shared.grpc import configure_logging, start_metrics_server
from shared.grpc.server import GrpcServer, stop_on_signals
from shared.grpc.tls import server_credentials
from shared.host import Components, Host

log = logging.getLogger(__name__)

# A service's build bound to its own settings: build(resources, images) -> Components.
Build = Callable[[Resources, ImageSettings], Components]


@dataclass(frozen=True)
class ProcessSettings:
    """The groups every process reads at start-up: its gRPC server, the shared resources, image limits."""

    grpc: GrpcServerSettings = field(default_factory=GrpcServerSettings)
    resources: ResourceSettings = field(default_factory=ResourceSettings)
    images: ImageSettings = field(default_factory=ImageSettings)


class Process:
    """One process: its resources, the services it hosts, its gRPC server. `start()` / `stop()` / `serve()`.

    `builds` maps each hosted target to its service's `build`, bound to that service's settings and called
    with (resources, images)."""

    def __init__(self, settings: ProcessSettings, builds: Mapping[str, Build]) -> None:
        self.settings = settings
        self.builds = dict(builds)
        self.targets = tuple(t for key in self.builds for t in key.split(","))
        self.resources = Resources(settings.resources)
        self.server: GrpcServer | None = None
        self.host = Host()

    def start(self) -> Process:
        state_file = StateFile(self.settings.resources.stores.data_dir, self._state)
        state_file.claim()
        try:
            self.host.add("resources", self.resources)
            builds = [build(self.resources, self.settings.images) for build in self.builds.values()]
        except BaseException:
            self.resources.stop()
            raise
        for components in builds:
            for part in components.parts:
                self.host.add(part.name, part.component)
        g = self.settings.grpc
        self.server = GrpcServer([s for b in builds for s in b.servicers], f"{g.host}:{g.port}",
                                 max_workers=g.max_workers, max_message_bytes=g.max_message_bytes,
                                 grace=g.grace_seconds, credentials=server_credentials(g))
        self.host.add("grpc", self.server)
        self.host.add("state file", state_file)
        self.host.on_failure = self._failed
        self.host.start()
        start_metrics_server(g.metrics_port, g.host)
        log.info("gRPC serving %s on %s", ", ".join(self.targets), self.address)
        return self

    def serve(self, stop: threading.Event | None = None) -> None:
        self.host.serve(stop)

    def start_and_serve(self, on_serving: Callable[[Process], None] | None = None) -> None:
        """Start, serve until SIGTERM/SIGINT, then drain and stop. The signals are caught from the start: one
        that arrives while the process starts (after stack.json is written, say) stops it cleanly once it is
        up, instead of killing it half-started with its state file left behind."""
        stop = threading.Event()
        with stop_on_signals(stop):
            self.start()
            if on_serving is not None:
                on_serving(self)
            self.host.serve(stop)

    def run(self) -> None:
        """`python -m services.NAME`: log as JSON, start, serve until SIGTERM, drain and stop."""
        configure_logging()
        self.start_and_serve()

    def stop(self) -> None:
        self.host.stop()

    def _failed(self, name: str, error: BaseException) -> None:
        """A consumer thread that died makes the process NOT_SERVING, so probes restart it."""
        log.error("%s failed (%s): health NOT_SERVING", name, error)
        if self.server is not None:
            self.server.not_serving()

    def _state(self) -> dict:
        # image_roots: `fashion publish` refuses a folder this process's ingest would refuse every image of.
        return {"grpc": self.address, "kafka_bootstrap": self.bootstrap, "broker_pid": self.resources.broker_pid,
                "database_url": self.database_url, "targets": self.targets,
                "http": {n.name: url for n in self.host.components if (url := getattr(n.component, "url", None))},
                "image_roots": [str(root) for root in self.settings.images.image_intake().policy.roots]}

    # -- what tools (demo, bench, `fashion up`) read --------------------------------------------------------
    @property
    def address(self) -> str:
        port = self.server.port if self.server is not None else None
        return f"{self.settings.grpc.host}:{port}"

    @property
    def bootstrap(self) -> str | None:
        return self.resources.kafka_bootstrap

    @property
    def database_url(self) -> str | None:
        return self.resources.database_url

    @property
    def sessions(self):
        """The database's session factory (`with stack.sessions() as session:`)."""
        return self.resources.sessions()

    @property
    def runtime(self):
        return self.resources.runtime()

    @property
    def error(self) -> BaseException | None:
        """The first error a hosted component (a consumer thread) ended with, if any."""
        return next((e for n in self.host.components if (e := getattr(n.component, "error", None)) is not None),
                    None)
