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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    return d


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
