#!/usr/bin/env python3
"""grpc.health.v1 check for container health checks: exit 0 when the service is SERVING, 1 otherwise.

The image installs this file as `fashion-healthcheck` (see deploy/Dockerfile), so docker-compose can run
``fashion-healthcheck --service fashion.v1.SearchService`` without downloading `grpc_health_probe`.
Kubernetes needs none of this: its probes speak grpc.health.v1 natively (`grpc: {port, service}`).

The address defaults to 127.0.0.1 and the FASHION_PORT the service itself was started with, so a check
cannot drift from the port the server listens on. When the service serves TLS (FASHION_TLS_CERT_FILE), the
check speaks TLS too, trusting FASHION_TLS_CA_FILE (and presenting FASHION_TLS_CLIENT_CERT_FILE / _KEY_FILE
where the server requires client certificates): Kubernetes' native gRPC probes cannot, so the TLS overlay
(deploy/k8s/tls) runs this instead.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_address() -> str:
    return f"127.0.0.1:{os.environ.get('FASHION_PORT', DEFAULT_PORT)}"


def _read(name: str) -> bytes | None:
    path = os.environ.get(name)
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def credentials_from_env() -> grpc.ChannelCredentials | None:
    """TLS credentials when FASHION_TLS_CA_FILE is set, else None (plaintext)."""
    ca = _read("FASHION_TLS_CA_FILE")
    if ca is None:
        return None
    return grpc.ssl_channel_credentials(ca, _read("FASHION_TLS_CLIENT_KEY_FILE"), _read("FASHION_TLS_CLIENT_CERT_FILE"))


def check(address: str, service: str = "", timeout: float = 3.0,
          credentials: grpc.ChannelCredentials | None = None) -> tuple[bool, str]:
    """(serving, what was seen): one Health.Check call with a deadline; any failure is "not serving"."""
    channel_of = (lambda: grpc.secure_channel(address, credentials)) if credentials is not None \
        else (lambda: grpc.insecure_channel(address))
    with channel_of() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=default_address(), help="host:port (default 127.0.0.1:$FASHION_PORT)")
    parser.add_argument("--service", default="", help='full service name, e.g. fashion.v1.SearchService ("" = server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline of the check in seconds")
    args = parser.parse_args(argv)
    serving, seen = check(args.address, args.service, args.timeout, credentials_from_env())
    print(f"{args.address} {args.service or '(server)'}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
