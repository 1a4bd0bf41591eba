"""The shared gRPC toolkit through real servers on port 0 and real channels.

A fake SearchService raises each typed error on demand, so every status code mapping, health, reflection,
deadlines, message limits, retries, metrics and the graceful SIGTERM drain are checked end to end.
"""

from __future__ import annotations

import io
import json
import logging
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from shared.errors import (
    DataFormatError,
    FashionError,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from shared.grpc import (
    call_with_deadline,
    channel,
    configure_logging,
    create_server,
    error_from_rpc,
    health_servicer,
    serve,
    service_name_of,
    status_for,
)

ROOT = Path(__file__).resolve().parents[2]
SEARCH = "fashion.v1.SearchService"
MAX_BYTES = 64 * 1024
SECRET = "database password is hunter2"

RAISES: dict[str, Exception] = {
    "invalid": InvalidInput("expected top_k in 1..100, got 0"),
    "format": DataFormatError("list_bbox.txt", 3, "5 columns", "a b"),
    "missing": NotFound("unknown product_id 'missing'"),
    "large": TooLarge("image is 90 MP, expected at most 40 MP"),
    "unauth": Unauthenticated("expected a bearer token"),
    "unavail": Unavailable("model is loading"),
    "precondition": FashionError("no serving model: train or promote one first"),
    "timeout": TimeoutError("batcher 'embed': 1 item(s) not processed within 0.5s"),
    "boom": RuntimeError(SECRET),
}


class FakeSearch(search_pb2_grpc.SearchServiceServicer):
    """Raises the error named by product_id; sleeps on "slow"; aborts itself on "abort"."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def FindSimilar(self, request: search_pb2.FindSimilarRequest, context: grpc.ServicerContext):  # noqa: N802
        key = request.product_id
        if key in RAISES:
            raise RAISES[key]
        if key == "slow":
            time.sleep(0.5)
        if key == "abort":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "servicer chose this code")
        return search_pb2.FindSimilarResponse(
            query_id=f"q-{key}", hits=[search_pb2.SearchHit(product_id="p1", position=0, score=0.9)]
        )

    def RecordClick(self, request: search_pb2.RecordClickRequest, context: grpc.ServicerContext):  # noqa: N802
        """Fails with UNAVAILABLE on the first two attempts of each query_id, then accepts."""
        with self._lock:
            self.attempts[request.query_id] += 1
            attempt = self.attempts[request.query_id]
        if attempt <= 2:
            raise Unavailable(f"attempt {attempt}: broker not ready")
        return search_pb2.RecordClickResponse(accepted=True)


@pytest.fixture(scope="module")
def fake() -> FakeSearch:
    return FakeSearch()


@pytest.fixture(scope="module")
def address(fake: FakeSearch) -> Iterator[str]:
    server, port = create_server(
        [(search_pb2_grpc.add_SearchServiceServicer_to_server, fake)], max_workers=4, max_message_bytes=MAX_BYTES
    )
    yield f"127.0.0.1:{port}"
    server.stop(0).wait()


@pytest.fixture(scope="module")
def stub(address: str) -> Iterator[search_pb2_grpc.SearchServiceStub]:
    with channel(address, 1024 * 1024, retries=False) as ch:
        yield search_pb2_grpc.SearchServiceStub(ch)


def find(stub: search_pb2_grpc.SearchServiceStub, product_id: str, timeout: float = 5.0):
    return call_with_deadline(stub.FindSimilar, search_pb2.FindSimilarRequest(product_id=product_id), timeout)


def rpc_error(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    return excinfo.value.code(), excinfo.value.details()


# ------------------------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("format", grpc.StatusCode.INVALID_ARGUMENT),
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("large", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("unauth", grpc.StatusCode.UNAUTHENTICATED),
        ("unavail", grpc.StatusCode.UNAVAILABLE),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_typed_errors_arrive_with_their_code_and_message(stub, key: str, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        find(stub, key)
    assert rpc_error(excinfo) == (code, str(RAISES[key]))


def test_unexpected_exception_is_internal_generic_and_logged(stub, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="fashion.grpc"), pytest.raises(grpc.RpcError) as excinfo:
        find(stub, "boom")
    code, details = rpc_error(excinfo)
    assert code is grpc.StatusCode.INTERNAL
    assert SECRET not in details and "SearchService/FindSimilar" in details
    logged = [r for r in caplog.records if r.name == "fashion.grpc" and r.exc_info]
    assert logged and SECRET in str(logged[0].exc_info[1])


def test_servicer_abort_keeps_its_own_code(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        find(stub, "abort")
    assert rpc_error(excinfo) == (grpc.StatusCode.PERMISSION_DENIED, "servicer chose this code")


class DownstreamError(grpc.RpcError, grpc.Call):
    """What a failed stub call raises (a grpc.RpcError that is also a grpc.Call)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None:
        return None

    def trailing_metadata(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_status_for_and_error_from_rpc_are_inverse() -> None:
    for exc, typed in [
        (InvalidInput("a"), InvalidInput),
        (NotFound("b"), NotFound),
        (TooLarge("c"), TooLarge),
        (Unauthenticated("d"), Unauthenticated),
        (Unavailable("e"), Unavailable),
    ]:
        code, message = status_for(exc)
        back = error_from_rpc(DownstreamError(code, message))
        assert type(back) is typed and str(back) == str(exc)
    assert status_for(DownstreamError(grpc.StatusCode.NOT_FOUND, "x")) == (grpc.StatusCode.NOT_FOUND, "x")
    assert status_for(DownstreamError(grpc.StatusCode.UNKNOWN, "y"))[0] is grpc.StatusCode.INTERNAL
    assert isinstance(error_from_rpc(DownstreamError(grpc.StatusCode.DEADLINE_EXCEEDED, "late")), Unavailable)
    assert str(error_from_rpc(DownstreamError(grpc.StatusCode.INTERNAL, "z"))) == "INTERNAL: z"


# ------------------------------------------------------------------------------ deadlines, limits, retries


def test_expired_deadline_is_deadline_exceeded(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        find(stub, "slow", timeout=0.1)
    assert excinfo.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_call_with_deadline_refuses_calls_without_one(stub) -> None:
    for bad in (None, 0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="expected a deadline"):
            call_with_deadline(stub.FindSimilar, search_pb2.FindSimilarRequest(product_id="ok"), bad)


def test_message_over_server_limit_is_resource_exhausted(stub) -> None:
    request = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=b"\xff" * (MAX_BYTES + 1), id="big"))
    with pytest.raises(grpc.RpcError) as excinfo:
        call_with_deadline(stub.FindSimilar, request, 5)
    assert excinfo.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_message_over_client_limit_is_resource_exhausted(address: str) -> None:
    request = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=b"\xff" * 2048))
    with channel(address, 1024) as ch, pytest.raises(grpc.RpcError) as excinfo:
        call_with_deadline(search_pb2_grpc.SearchServiceStub(ch).FindSimilar, request, 5)
    assert excinfo.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_channel_retries_unavailable_through_service_config(address: str, fake: FakeSearch) -> None:
    with channel(address) as ch:
        reply = call_with_deadline(
            search_pb2_grpc.SearchServiceStub(ch).RecordClick, search_pb2.RecordClickRequest(query_id="retry-me"), 10
        )
    assert reply.accepted and fake.attempts["retry-me"] == 3
    with channel(address, retries=False) as ch, pytest.raises(grpc.RpcError) as excinfo:
        call_with_deadline(
            search_pb2_grpc.SearchServiceStub(ch).RecordClick, search_pb2.RecordClickRequest(query_id="once"), 10
        )
    assert excinfo.value.code() is grpc.StatusCode.UNAVAILABLE and fake.attempts["once"] == 1


# ------------------------------------------------------------------------ health, reflection, observability


def test_health_is_serving_for_each_service_and_overall(address: str) -> None:
    with channel(address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SEARCH):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as excinfo:
            health.Check(health_pb2.HealthCheckRequest(service="fashion.v1.NoSuchService"), timeout=5)
        assert excinfo.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_resolves_their_files(address: str) -> None:
    with channel(address) as ch:
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SEARCH),
        ]
        listed, files = list(reflect.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {SEARCH, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert files.file_descriptor_response.file_descriptor_proto


def test_service_names_come_from_generated_servicers() -> None:
    assert service_name_of(FakeSearch()) == SEARCH
    with pytest.raises(ValueError, match="generated"):
        service_name_of(object())


def test_rpcs_are_counted_by_code(stub) -> None:
    labels = {"grpc_service": SEARCH, "grpc_method": "FindSimilar", "grpc_code": "NOT_FOUND"}
    before = REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0
    with pytest.raises(grpc.RpcError):
        find(stub, "missing")
    find(stub, "ok")
    assert REGISTRY.get_sample_value("grpc_server_handled_total", labels) == before + 1
    ok = {"grpc_service": SEARCH, "grpc_method": "FindSimilar", "grpc_code": "OK"}
    assert REGISTRY.get_sample_value("grpc_server_handled_total", ok) >= 1
    latency = {"grpc_service": SEARCH, "grpc_method": "FindSimilar"}
    assert REGISTRY.get_sample_value("grpc_server_handling_seconds_count", latency) >= 2


def test_json_logs_carry_extra_fields() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    out = io.StringIO()
    try:
        configure_logging("INFO", json=True, stream=out)
        configure_logging("INFO", json=True, stream=out)  # replaces its own handler, never stacks
        logging.getLogger("fashion.test").info("indexed %d images", 3, extra={"product_id": "p1"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["msg"] == "indexed 3 images" and record["product_id"] == "p1" and record["level"] == "INFO"


# ------------------------------------------------------------------------------------------------ shutdown


def test_serve_reports_not_serving_during_drain() -> None:
    health = health_servicer()
    server, port = create_server(
        [(search_pb2_grpc.add_SearchServiceServicer_to_server, FakeSearch())], health=health, max_workers=2
    )
    stop = threading.Event()
    serving = threading.Thread(
        target=serve, args=(server, health, 1.0), kwargs={"drain_delay": 1.5, "stop_event": stop}
    )
    serving.start()
    with channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        def status() -> int:
            return stub.Check(health_pb2.HealthCheckRequest(service=SEARCH), timeout=5).status

        assert status() == health_pb2.HealthCheckResponse.SERVING
        stop.set()
        deadline = time.monotonic() + 1.2
        while status() != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health never went NOT_SERVING"
            time.sleep(0.02)
    serving.join(10)
    assert not serving.is_alive()


SLOW_SERVER = """
import time
from fashion.v1 import search_pb2, search_pb2_grpc
from shared.grpc import create_server, health_servicer, serve

class Slow(search_pb2_grpc.SearchServiceServicer):
    def FindSimilar(self, request, context):
        print("in-flight", flush=True)
        time.sleep(1.0)
        return search_pb2.FindSimilarResponse(query_id="finished")

health = health_servicer()
server, port = create_server([(search_pb2_grpc.add_SearchServiceServicer_to_server, Slow())], health=health)
print(port, flush=True)
serve(server, health, grace=10.0)
print("exited", flush=True)
"""


def _readline(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail(f"server printed nothing in {timeout}s; stderr: {proc.stderr.read()}")
    return proc.stdout.readline().strip()


def test_sigterm_drains_in_flight_request_and_exits_zero() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SERVER], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        port = int(_readline(proc))
        with channel(f"127.0.0.1:{port}") as ch:
            call = search_pb2_grpc.SearchServiceStub(ch).FindSimilar.future(
                search_pb2.FindSimilarRequest(product_id="p1"), timeout=15
            )
            assert _readline(proc) == "in-flight"
            proc.send_signal(signal.SIGTERM)
            assert call.result(timeout=15).query_id == "finished"
        assert proc.wait(timeout=15) == 0, proc.stderr.read()
        assert _readline(proc) == "exited"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _outward_ipv4() -> str | None:
    """This host's address on its default route (no packet is sent), or None without one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_metrics_listen_only_where_the_grpc_server_does() -> None:
    import socket
    import urllib.request

    from shared.grpc import start_metrics_server
    from shared.messaging import free_port

    port = free_port()
    assert start_metrics_server(port, "127.0.0.1") == port
    assert b"# TYPE" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    outward = _outward_ipv4()
    if outward is None:
        pytest.skip("no non-loopback address to check from")
    with pytest.raises(OSError), socket.create_connection((outward, port), timeout=2):
        pass
