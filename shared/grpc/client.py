"""Client side: channels with size limits and a retry policy, and calls that always carry a deadline.

Retries are grpc's own (service config ``retryPolicy``: UNAVAILABLE only, exponential backoff), not
hand-written loops, so they respect the call's deadline and never replay a call the server has answered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from shared.grpc.server import DEFAULT_MAX_MESSAGE_BYTES

Response = TypeVar("Response")


def retry_service_config(
    *,
    max_attempts: int = 4,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    backoff_multiplier: float = 2.0,
    retryable_codes: Sequence[str] = ("UNAVAILABLE",),
) -> str:
    """A gRPC service config (JSON) applying one retry policy to every method of every service."""
    return json.dumps(
        {
            # Spread calls over every address a name resolves to (the pods of a headless Service); the
            # default pick_first would pin each client process to one model replica.
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{}],  # empty name = default for all services and methods
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": f"{initial_backoff_s}s",
                        "maxBackoff": f"{max_backoff_s}s",
                        "backoffMultiplier": backoff_multiplier,
                        "retryableStatusCodes": list(retryable_codes),
                    },
                }
            ]
        }
    )


def channel(
    address: str,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    retries: bool = True,
    service_config: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """A channel to ``address`` with matching message limits and the default retry policy: TLS with
    ``credentials`` (shared/grpc/tls.py), plaintext without.

    The per-call retry buffer is raised to the message limit: grpc's 256 KiB default would silently
    disable retries for any request carrying an image.
    """
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries else 0),
    ]
    if retries:
        opts += [
            ("grpc.service_config", service_config or retry_service_config()),
            ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
        ]
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=[*opts, *options])
    return grpc.insecure_channel(address, options=[*opts, *options])


def call_with_deadline(
    stub_method: Callable[..., Response],
    request: Any,
    timeout: float,
    *,
    metadata: Sequence[tuple[str, str]] | None = None,
    wait_for_ready: bool | None = None,
) -> Response:
    """Call a unary stub method with a deadline of ``timeout`` seconds (required: no call may wait forever).

    Failures raise ``grpc.RpcError`` as usual; ``shared.grpc.errors.error_from_rpc`` turns one into the
    matching typed error.
    """
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"expected a deadline in seconds > 0, got {timeout!r}")
    return stub_method(request, timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready)
