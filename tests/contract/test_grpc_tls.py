"""gRPC over TLS and mutual TLS with certificates made here by openssl (a CA, a server and a client cert)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from fashion.v1 import search_pb2, search_pb2_grpc
from shared.config import GrpcClientSettings, GrpcServerSettings
from shared.grpc import create_server
from shared.grpc.client import call_with_deadline, channel
from shared.grpc.tls import channel_credentials, is_loopback, server_credentials, warn_if_clear_text_secret

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


class Echo(search_pb2_grpc.SearchServiceServicer):
    def FindSimilar(self, request, context):  # noqa: N802
        return search_pb2.FindSimilarResponse(query_id=f"q-{request.product_id}")


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """The certificates deploy/tls/make-certs.sh makes for compose and Kubernetes (so the script is tested too)."""
    out = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(ROOT / "deploy" / "tls" / "make-certs.sh"), str(out)], check=True, capture_output=True)
    return out


def _serve(settings: GrpcServerSettings) -> tuple[grpc.Server, str]:
    server, port = create_server([(search_pb2_grpc.add_SearchServiceServicer_to_server, Echo())],
                                 credentials=server_credentials(settings))
    return server, f"127.0.0.1:{port}"


def _ask(address: str, credentials) -> str:
    with channel(address, retries=False, credentials=credentials) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        return call_with_deadline(stub.FindSimilar, search_pb2.FindSimilarRequest(product_id="x"), 5).query_id


@pytest.fixture(scope="module")
def tls_address(pki: Path) -> Iterator[str]:
    server, address = _serve(GrpcServerSettings(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key"))
    yield address
    server.stop(0).wait()


def test_a_client_with_the_ca_talks_tls(tls_address: str, pki: Path) -> None:
    assert _ask(tls_address, channel_credentials(GrpcClientSettings(tls_ca_file=pki / "ca.pem"))) == "q-x"


def test_a_plaintext_client_gets_nothing_from_a_tls_server(tls_address: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _ask(tls_address, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(pki: Path) -> None:
    server, address = _serve(GrpcServerSettings(tls_cert_file=pki / "server.pem", tls_key_file=pki / "server.key",
                                                tls_client_ca_file=pki / "ca.pem"))
    try:
        with pytest.raises(grpc.RpcError):
            _ask(address, channel_credentials(GrpcClientSettings(tls_ca_file=pki / "ca.pem")))
        mutual = GrpcClientSettings(tls_ca_file=pki / "ca.pem", tls_client_cert_file=pki / "client.pem",
                                    tls_client_key_file=pki / "client.key")
        assert _ask(address, channel_credentials(mutual)) == "q-x"
    finally:
        server.stop(0).wait()


def test_half_a_tls_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="together"):
        GrpcServerSettings(tls_cert_file=tmp_path / "server.pem")


def test_clear_text_admin_token_to_a_remote_address_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback("127.0.0.1:50051") and is_loopback("localhost:1") and is_loopback("[::1]:5")
    assert not is_loopback("admin.fashion.svc:50051")
    with caplog.at_level(logging.WARNING, logger="shared.grpc.tls"):
        warn_if_clear_text_secret("127.0.0.1:50051", None, "the admin token")
        assert not caplog.records
        warn_if_clear_text_secret("admin.fashion.svc:50051", None, "the admin token")
    assert "the admin token to admin.fashion.svc:50051 in clear text" in caplog.text


def test_the_container_health_check_speaks_tls(tls_address: str, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/healthcheck.py (fashion-healthcheck), which the TLS overlays use instead of native gRPC probes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    assert healthcheck.main(["--address", tls_address]) == 1  # plaintext against a TLS server: not serving
    monkeypatch.setenv("FASHION_TLS_CA_FILE", str(pki / "ca.pem"))
    assert healthcheck.main(["--address", tls_address, "--service", "fashion.v1.SearchService"]) == 0
