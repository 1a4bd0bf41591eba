"""One server lifecycle for every service: create (bound, started) -> serve (block) -> graceful drain.

Usage::

    health = health_servicer()
    server, port = create_server(
        [(add_SearchServiceServicer_to_server, SearchServicer(...))], "0.0.0.0:50051", health=health
    )
    serve(server, health, grace=10.0)  # returns after SIGTERM/SIGINT and a graceful drain
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from types import FrameType, ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.grpc.errors import ErrorInterceptor
from shared.grpc.metrics import ObservabilityInterceptor, start_metrics_server

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AddServicerFn",
    "GrpcServer",
    "create_server",
    "drain",
    "health_servicer",
    "serve",
    "service_name_of",
    "start_metrics_server",
    "stop_on_signals",
]

log = logging.getLogger("fashion.grpc")

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
AddServicerFn = Callable[[Any, grpc.Server], None]


def health_servicer() -> grpc_health.HealthServicer:
    """The stock grpc.health.v1 servicer (non-blocking Watch, so watchers hold no worker thread)."""
    return grpc_health.HealthServicer(experimental_non_blocking=True)


def service_name_of(servicer: object) -> str:
    """Full service name ("fashion.v1.SearchService") of a servicer subclassing a generated ``*Servicer``."""
    for cls in type(servicer).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or not cls.__module__.endswith("_pb2_grpc") or not cls.__name__.endswith("Servicer"):
            continue
        short = cls.__name__.removesuffix("Servicer")
        for value in vars(module).values():
            descriptor = getattr(value, "DESCRIPTOR", None) if isinstance(value, ModuleType) else None
            if descriptor is not None and short in descriptor.services_by_name:
                return descriptor.services_by_name[short].full_name
    raise ValueError(
        f"cannot tell the service name of {type(servicer).__name__}: expected a subclass of a generated "
        "*Servicer class, or pass service_names= explicitly"
    )


def create_server(
    servicers: Sequence[tuple[AddServicerFn, object]],
    address: str = "127.0.0.1:0",
    *,
    max_workers: int = 16,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    service_names: Sequence[str] | None = None,
    health: grpc_health.HealthServicer | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    maximum_concurrent_rpcs: int | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """Build, bind and START a server with health, reflection, error mapping, metrics and access logs.

    ``service_names`` defaults to the names of the generated servicer classes; each is set SERVING in
    ``health`` (a fresh one when omitted; pass your own to hand it to ``serve``), as is "". Messages
    over ``max_message_bytes`` either way are rejected with RESOURCE_EXHAUSTED. Returns the server and
    its bound port (useful with port 0). Extra ``interceptors`` run inside the error mapping. With
    ``credentials`` (shared/grpc/tls.py) the port serves TLS only.
    """
    # No servicers is allowed: a consumer-only process (ingest) still serves health and reflection.
    names = list(service_names) if service_names is not None else [service_name_of(s) for _, s in servicers]
    health = health if health is not None else health_servicer()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[ObservabilityInterceptor(), ErrorInterceptor(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a taken port must fail loudly, not be shared silently
        ],
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    for add, servicer in servicers:
        add(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ["", *names]:
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        server.stop(None)
        raise RuntimeError(f"cannot bind gRPC server to {address}: expected a free host:port") from exc
    server.start()
    log.info("grpc server listening", extra={"address": address, "port": port, "services": names})
    return server, port


def serve(
    server: grpc.Server,
    health: grpc_health.HealthServicer,
    grace: float = 10.0,
    *,
    drain_delay: float = 0.0,
    stop_event: threading.Event | None = None,
) -> None:
    """Block until SIGTERM/SIGINT (or ``stop_event``), then drain gracefully and return.

    Drain: health goes NOT_SERVING for every service (so load balancers stop routing here), an optional
    ``drain_delay`` lets them notice, then ``server.stop(grace)`` refuses new RPCs and gives in-flight
    ones ``grace`` seconds to finish. Signal handlers are installed only on the main thread and restored
    afterwards, so a second Ctrl-C during the drain forces the exit.
    """
    stop = stop_event if stop_event is not None else threading.Event()
    with stop_on_signals(stop):
        stop.wait()
    drain(server, health, grace, drain_delay=drain_delay)


def drain(server: grpc.Server, health: grpc_health.HealthServicer, grace: float, *, drain_delay: float = 0.0) -> None:
    """Health NOT_SERVING for every service, wait `drain_delay`, then refuse new RPCs and give in-flight ones
    `grace` seconds."""
    log.info("shutting down: health NOT_SERVING, draining", extra={"grace_s": grace, "drain_delay_s": drain_delay})
    health.enter_graceful_shutdown()
    if drain_delay > 0:
        time.sleep(drain_delay)
    server.stop(grace).wait()
    log.info("grpc server stopped")


class GrpcServer:
    """The gRPC server as a host component: `start()` builds, binds and starts it (create_server); `stop()`
    drains it gracefully (drain). `health` is created up front so other components can report into it."""

    def __init__(self, servicers: Sequence[tuple[AddServicerFn, object]], address: str, *, max_workers: int = 16,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, grace: float = 10.0,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.servicers = list(servicers)
        self.credentials = credentials
        self.address = address
        self.max_workers = max_workers
        self.max_message_bytes = max_message_bytes
        self.grace = grace
        self.health = health_servicer()
        self.server: grpc.Server | None = None
        self.port: int | None = None

    def start(self) -> GrpcServer:
        self.server, self.port = create_server(self.servicers, self.address, max_workers=self.max_workers,
                                               max_message_bytes=self.max_message_bytes, health=self.health,
                                               credentials=self.credentials)
        return self

    def stop(self) -> None:
        if self.server is not None:
            drain(self.server, self.health, self.grace)
            self.server = None

    def not_serving(self) -> None:
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT while inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # nothing else here: a handler may interrupt code holding logging's locks

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
