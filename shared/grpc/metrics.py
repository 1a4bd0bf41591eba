"""Prometheus metrics for gRPC servers and batchers, plus the observability interceptor.

Metric objects live once per process in prometheus_client's default registry (the library's own idiom);
they are not clients. Names follow go-grpc-prometheus so stock dashboards work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shared.grpc._handlers import split_method, wrap_handler

log = logging.getLogger("fashion.grpc.access")

RPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from the servicer being called to its response, by service and method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_SIZE = Histogram(
    "fashion_batch_size",
    "Items per call of a dynamic batcher's function.",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_QUEUE_SECONDS = Histogram(
    "fashion_batch_queue_seconds",
    "Time a submission waited before its first items were dispatched.",
    ["batcher"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_PENDING = Gauge("fashion_batch_pending_items", "Items waiting in a dynamic batcher.", ["batcher"])

_ERROR_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> int | None:
    """Serve /metrics on ``addr:port`` (the gRPC server's host, so a loopback-only process does not expose its
    metrics to the network); ``port`` 0 means metrics over HTTP are off. Returns the port or None."""
    if port <= 0:
        return None
    start_http_server(port, addr)
    return port


def _final_code(context: grpc.ServicerContext, raised: bool) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return code
    if raised:
        return grpc.StatusCode.UNKNOWN
    if context.time_remaining() <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED  # answered, but the caller had already given up
    return grpc.StatusCode.OK


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by status code, times it, and writes one structured access-log line.

    Sits outside ``ErrorInterceptor`` so it sees the mapped status code. Successful calls log at DEBUG
    (hot paths stay quiet), client errors at INFO, server errors at ERROR.
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        service, method = split_method(handler_call_details.method)

        def record(context: grpc.ServicerContext, started: float, raised: bool) -> None:
            elapsed = time.perf_counter() - started
            code = _final_code(context, raised)
            RPC_HANDLED.labels(service, method, code.name).inc()
            RPC_LATENCY.labels(service, method).observe(elapsed)
            level = logging.DEBUG if code is grpc.StatusCode.OK else logging.INFO
            if code in _ERROR_CODES:
                level = logging.ERROR
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "rpc %s/%s %s",
                    service,
                    method,
                    code.name,
                    extra={
                        "grpc_service": service,
                        "grpc_method": method,
                        "grpc_code": code.name,
                        "duration_ms": round(elapsed * 1000, 3),
                        "peer": context.peer(),
                    },
                )

        def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            if streaming:

                def observed_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    started, raised = time.perf_counter(), True
                    try:
                        yield from behavior(request, context)
                        raised = False
                    finally:
                        record(context, started, raised)

                return observed_stream

            def observed(request: Any, context: grpc.ServicerContext) -> Any:
                started, raised = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    raised = False
                    return response
                finally:
                    record(context, started, raised)

            return observed

        return wrap_handler(continuation(handler_call_details), wrap)
