"""Rebuild a gRPC method handler around a wrapped behaviour, whatever its arity (shared by the interceptors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

# wrap(behavior, response_streaming) -> new behavior with the same (request_or_iterator, context) signature.
BehaviorWrapper = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def split_method(full_method: str) -> tuple[str, str]:
    """Split a full method name: "/fashion.v1.SearchService/FindSimilar" -> (service, method)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def wrap_handler(handler: grpc.RpcMethodHandler | None, wrap: BehaviorWrapper) -> grpc.RpcMethodHandler | None:
    """Return ``handler`` with its behaviour wrapped, keeping serializers.

    Non-blocking behaviours (the stock health servicer's ``Watch``, called with a third
    ``send_response_callback`` argument) are left untouched: wrapping them would drop that flag.
    """
    if handler is None:
        return None
    if handler.unary_unary is not None:
        behavior, factory, streaming = handler.unary_unary, grpc.unary_unary_rpc_method_handler, False
    elif handler.unary_stream is not None:
        behavior, factory, streaming = handler.unary_stream, grpc.unary_stream_rpc_method_handler, True
    elif handler.stream_unary is not None:
        behavior, factory, streaming = handler.stream_unary, grpc.stream_unary_rpc_method_handler, False
    elif handler.stream_stream is not None:
        behavior, factory, streaming = handler.stream_stream, grpc.stream_stream_rpc_method_handler, True
    else:  # pragma: no cover - grpc never builds such a handler
        return handler
    if getattr(behavior, "experimental_non_blocking", False):
        return handler
    return factory(
        wrap(behavior, streaming),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
