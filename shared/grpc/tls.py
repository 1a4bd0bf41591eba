"""TLS for every gRPC hop: server certificate and key (optionally requiring client certificates, mTLS), and
the CA clients verify servers with. Unset means plaintext, which is right only on loopback or inside a network
that already encrypts (a service mesh); the admin token would otherwise cross the network in clear text.

Settings: FASHION_TLS_CERT_FILE / FASHION_TLS_KEY_FILE / FASHION_TLS_CLIENT_CA_FILE on servers
(GrpcServerSettings), FASHION_TLS_CA_FILE / FASHION_TLS_CLIENT_CERT_FILE / FASHION_TLS_CLIENT_KEY_FILE on
clients (GrpcClientSettings). PEM files, read once at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache
from pathlib import Path

import grpc

from shared.config import GrpcClientSettings, GrpcServerSettings
from shared.errors import InvalidInput

log = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"expected a readable PEM file for {what}, got {path} ({exc.strerror})") from None


def server_credentials(settings: GrpcServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server, or None (plaintext) when no certificate is configured."""
    if settings.tls_cert_file is None:
        return None
    assert settings.tls_key_file is not None  # the settings validator requires both
    pair = [(_read(settings.tls_key_file, "FASHION_TLS_KEY_FILE"), _read(settings.tls_cert_file,
                                                                          "FASHION_TLS_CERT_FILE"))]
    if settings.tls_client_ca_file is not None:
        return grpc.ssl_server_credentials(pair, _read(settings.tls_client_ca_file, "FASHION_TLS_CLIENT_CA_FILE"),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(settings: GrpcClientSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for a client, or None (plaintext) when no CA is configured."""
    if settings.tls_ca_file is None:
        return None
    cert = _read(settings.tls_client_cert_file, "FASHION_TLS_CLIENT_CERT_FILE") if settings.tls_client_cert_file \
        else None
    key = _read(settings.tls_client_key_file, "FASHION_TLS_CLIENT_KEY_FILE") if settings.tls_client_key_file \
        else None
    return grpc.ssl_channel_credentials(_read(settings.tls_ca_file, "FASHION_TLS_CA_FILE"), key, cert)


@lru_cache(maxsize=1)
def client_credentials() -> grpc.ChannelCredentials | None:
    """This process's client credentials, from its environment (read once)."""
    return channel_credentials(GrpcClientSettings())


def is_loopback(address: str) -> bool:
    """True for localhost / 127.x / ::1 addresses ("host:port"); names other than localhost count as remote."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_clear_text_secret(address: str, credentials: grpc.ChannelCredentials | None, what: str) -> None:
    if credentials is None and not is_loopback(address):
        log.warning("sending %s to %s in clear text: set FASHION_TLS_CA_FILE (and serve with FASHION_TLS_CERT_FILE"
                    " / FASHION_TLS_KEY_FILE) so it travels encrypted", what, address)
