"""The latest dead letters, from `send_to_dlq` to the console: records dead-lettered into a real broker (the session's
Tansu) come back through a real AdminService (in-process gRPC server on port 0, over SQLite) newest first with
their reasons, and show on the console's health page once logged in as admin."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import grpc
import pytest

from fashion.v1 import admin_pb2, admin_pb2_grpc
from services.admin.core import AdminCore
from services.admin.server import admin_servicers, bearer_metadata
from services.console.backend import Backend
from services.console.routes import Console
from services.console.sessions import AdminSessions
from services.console.web import Request
from shared.db import make_engine, session_factory, sqlite_url, upgrade
from shared.grpc.server import create_server
from shared.imaging import ImageIntake
from shared.messaging import Record, ensure_topics, free_port, make_producer, read_latest_dead_letters, send_to_dlq

TOKEN = "dlq-admin-token"
TIMEOUT = 30
HOST = "console.test:8080"
# Sent oldest first: (DLQ topic index, source record, reason, error type).
SENT = [
    (0, Record("uploads", 0, 11, b"product-1", b"{}"), "expected a product_id, got ''", "InvalidInput"),
    (1, Record("clicks", 2, 5, b"q-9", b"\xff"), "expected JSON, got bytes that are not UTF-8", "DataFormatError"),
    (0, Record("uploads", 1, 12, b"product-2", b"{}"), "image <img src=x onerror=alert(1)> not found", "NotFound"),
    (0, Record("uploads", 2, 13, "produit-\u00e9".encode(), b"{}"), "expected an image", "InvalidInput"),
]


@dataclass
class Env:
    stub: admin_pb2_grpc.AdminServiceStub
    address: str
    topics: list[str]
    missing: str
    truncated_reason: str


def _call(stub, token: str | None = TOKEN, **request):
    metadata = bearer_metadata(token) if token else None
    return stub.ListDeadLetters(admin_pb2.ListDeadLettersRequest(**request), metadata=metadata, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:8]
    topics = [f"uploads-{suffix}.dlq", f"clicks-{suffix}.dlq"]
    missing = f"never-created-{suffix}.dlq"  # configured, but no consumer ever created it
    ensure_topics(kafka_bootstrap, {topics[0]: 3, topics[1]: 1})
    producer = make_producer(kafka_bootstrap)
    try:
        for index, record, reason, error_type in SENT:
            send_to_dlq(producer, topics[index], record, reason, error_type)
            time.sleep(0.005)  # distinct dead-letter times, so "newest first" has one answer
    finally:
        producer.close()
    # The newest: a record too large to copy (a producer capped at 100 kB stands in for the 16 MiB cap).
    small = make_producer(kafka_bootstrap, max_request_size=100_000)
    truncated_reason = "event of 300 kB: expected at most 2 MiB inline"
    try:
        send_to_dlq(small, topics[0], Record("uploads", 0, 14, b"product-3", b"y" * 300_000), truncated_reason,
                    "TooLarge")
    finally:
        small.close()

    url = sqlite_url(tmp_path_factory.mktemp("dlq") / "fashion.db")
    upgrade(url)
    engine = make_engine(url)
    # No promoter: nothing here promotes; the sessions answer the console's login check (ListModels).
    core = AdminCore(session_factory(engine), None, None, dlq_topics=[*topics, missing],  # type: ignore[arg-type]
                     read_dead_letters=partial(read_latest_dead_letters, kafka_bootstrap, timeout_s=10.0))
    server, port = create_server(admin_servicers(core, TOKEN))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Env(admin_pb2_grpc.AdminServiceStub(channel), f"127.0.0.1:{port}", topics, missing,
                      truncated_reason)
    finally:
        server.stop(0)
        engine.dispose()


def test_the_newest_come_first_with_where_from_and_why(env: Env) -> None:
    response = _call(env.stub)
    letters = list(response.dead_letters)
    assert [d.reason for d in letters] == [env.truncated_reason, *[reason for _, _, reason, _ in reversed(SENT)]]
    assert list(response.missing_topics) == [env.missing]
    newest, *rest = letters
    assert newest.value_truncated and newest.key == "product-3" and newest.error_type == "TooLarge"
    assert not any(d.value_truncated for d in rest)
    for letter, (index, record, _, error_type) in zip(rest, reversed(SENT), strict=True):
        assert (letter.dlq_topic, letter.source_topic, letter.source_partition, letter.source_offset) == (
            env.topics[index], record.topic, record.partition, record.offset)
        assert letter.error_type == error_type and letter.key == record.key.decode()
    stamps = [d.dead_lettered_at.ToMilliseconds() for d in letters]
    assert stamps == sorted(stamps, reverse=True) and abs(time.time() * 1000 - stamps[0]) < 600_000


def test_limit_and_topic_narrow_the_answer(env: Env) -> None:
    assert [d.reason for d in _call(env.stub, limit=2).dead_letters] == [env.truncated_reason, SENT[3][2]]
    clicks = _call(env.stub, topic=env.topics[1]).dead_letters
    assert [(d.dlq_topic, d.reason) for d in clicks] == [(env.topics[1], SENT[1][2])]
    assert not _call(env.stub, topic=env.missing).dead_letters


@pytest.mark.parametrize(("request_", "message"), [
    ({"limit": 201}, "expected a limit between 1 and 200 (0 = 20), got 201"),
    ({"limit": -1}, "expected a limit between 1 and 200"),
    ({"topic": "catalog.uploads"}, "expected a dead-letter topic among"),
])
def test_out_of_range_requests_are_invalid_argument(env: Env, request_: dict, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(env.stub, **request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_wrong_token_is_refused(env: Env, token: str | None) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _call(env.stub, token=token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_unreachable_broker_is_unavailable_saying_so() -> None:
    gone = f"127.0.0.1:{free_port()}"  # nothing listens there
    core = AdminCore(None, None, None, dlq_topics=["x.dlq"],  # type: ignore[arg-type]
                     read_dead_letters=partial(read_latest_dead_letters, gone, timeout_s=1.0))
    server, port = create_server(admin_servicers(core, TOKEN))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as err:
            _call(admin_pb2_grpc.AdminServiceStub(channel))
    finally:
        server.stop(0)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"the Kafka broker at {gone} did not answer" in err.value.details()


def _get(console: Console, path: str, cookie: str = "") -> str:
    response = console.handle(Request("GET", path, {}, {"host": HOST, "cookie": cookie}))
    assert response.status == 200
    return response.body


def test_the_health_page_shows_the_reasons_after_the_admin_login(env: Env) -> None:
    backend = Backend(lambda: env.address)
    console = Console(backend, AdminSessions(60.0), ImageIntake(), [], max_upload_bytes=4096)
    try:
        anonymous = _get(console, "/health")
        assert "Log in on the" in anonymous and 'id="dead-letters"' not in anonymous
        assert SENT[0][2] not in anonymous
        login = console.handle(Request("POST", "/login", {}, {"host": HOST, "origin": f"http://{HOST}"},
                                       {"token": [TOKEN]}))
        assert login.status == 303, login.body
        page = _get(console, "/health", dict(login.headers)["Set-Cookie"].split(";", 1)[0])
    finally:
        backend.close()
    table = page.split('id="dead-letters"', 1)[1].split("</table>", 1)[0]
    shown = [table.index(text) for text in ("value too large", "expected an image", "onerror", "not UTF-8",
                                            "expected a product_id")]
    assert shown == sorted(shown), "newest first"
    assert "image &lt;img src=x onerror=alert(1)&gt; not found" in table and "<img" not in table
    assert "uploads[2]@13" in table and "produit-\u00e9" in table and "Traceback" not in page
