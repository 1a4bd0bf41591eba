"""The one gRPC toolkit every service uses: server lifecycle, error mapping, client helpers, batching.

Modules: ``server`` (create_server, serve, health, reflection), ``errors`` (typed error <-> status code),
``client`` (channel, call_with_deadline), ``batcher`` (DynamicBatcher), ``metrics`` (Prometheus),
``logging`` (structured logs).
"""

from shared.grpc.batcher import DynamicBatcher
from shared.grpc.client import call_with_deadline, channel, retry_service_config
from shared.grpc.errors import ErrorInterceptor, error_from_rpc, status_for
from shared.grpc.logging import configure_logging
from shared.grpc.metrics import ObservabilityInterceptor, start_metrics_server
from shared.grpc.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AddServicerFn,
    create_server,
    health_servicer,
    serve,
    service_name_of,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "AddServicerFn",
    "DynamicBatcher",
    "ErrorInterceptor",
    "ObservabilityInterceptor",
    "call_with_deadline",
    "channel",
    "configure_logging",
    "create_server",
    "error_from_rpc",
    "health_servicer",
    "retry_service_config",
    "serve",
    "service_name_of",
    "start_metrics_server",
    "status_for",
]
