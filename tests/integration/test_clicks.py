"""A click travels RecordClick -> Kafka search.clicks -> ClickConsumer -> Postgres, once, on real services.

Real Tansu broker (session fixture), real PostgreSQL (a database created for this module and dropped after),
a real gRPC server with the SearchServicer and KafkaClickSink, Qdrant Edge and the tiny model.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from PIL import Image
from sqlalchemy.engine import make_url

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.search.clicks import ClickConsumer, KafkaClickSink
from services.search.core import SearchCore, click_id
from services.search.server import search_servicers
from shared.db import create_database_if_missing, drop_database, make_engine, repository, session_factory, upgrade
from shared.db.models import Click
from shared.grpc.server import create_server
from shared.imaging import ImageIntake
from shared.messaging import HEADER_ERROR_REASON, ensure_topics, make_producer
from shared.serving.runtime import ModelRuntime
from shared.vectorstore import VectorPoint, open_store

POSTGRES_SERVER = os.environ.get("FASHION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
VERSION = "tiny-1"
WAIT_S = 45.0
TIMEOUT = 30


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@dataclass
class Stack:
    stub: search_pb2_grpc.SearchServiceStub
    sessions: object
    consumer: ClickConsumer
    bootstrap: str
    topic: str
    dlq_topic: str


@pytest.fixture(scope="module")
def stack(tiny_checkpoint, kafka_bootstrap: str, tmp_path_factory) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    topic, dlq_topic = f"search.clicks-{suffix}", f"search.clicks.dlq-{suffix}"
    url = make_url(POSTGRES_SERVER).set(database=f"fashion_test_clicks_{suffix}").render_as_string(hide_password=False)
    assert create_database_if_missing(url)
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    runtime = ModelRuntime(engine="eager", max_batch=4, max_wait_ms=2)
    runtime.load(tiny_checkpoint)
    store = open_store(tmp_path_factory.mktemp("qdrant"))
    pictures = [Image.open(io.BytesIO(_png(i))).convert("RGB") for i in range(3)]
    vectors = [a.embedding for a in runtime.analyze(pictures, version=VERSION)]
    with sessions.begin() as session:
        for i in range(3):
            repository.upsert_product(session, f"p{i}", title=f"Product {i}", price=10 + i, currency="EUR")
    store.ensure_collection(VERSION, 32)
    store.upsert(VERSION, [VectorPoint(f"p{i}", f"p{i}-img", v, {"in_stock": True}) for i, v in enumerate(vectors)])
    store.set_alias(VERSION)

    ensure_topics(kafka_bootstrap, {topic: 2, dlq_topic: 1})
    producer = make_producer(kafka_bootstrap)
    core = SearchCore(runtime, sessions, store, ImageIntake(), click_sink=KafkaClickSink(producer, topic))
    server, port = create_server(search_servicers(core))
    consumer = ClickConsumer(kafka_bootstrap, sessions, producer, topic=topic, dlq_topic=dlq_topic,
                             group_id=f"clicks-{suffix}").start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stack(search_pb2_grpc.SearchServiceStub(channel), sessions, consumer, kafka_bootstrap, topic,
                        dlq_topic)
    finally:
        consumer.stop()
        server.stop(0)
        core.close()
        producer.close(timeout=5)
        runtime.close()
        store.close()
        engine.dispose()
        drop_database(url)


def _clicks(stack: Stack, query_id: str) -> list[Click]:
    with stack.sessions() as session:
        return list(session.scalars(sa.select(Click).where(Click.query_id == query_id)))


def test_a_click_reaches_postgres_exactly_once(stack: Stack) -> None:
    response = stack.stub.FindSimilar(search_pb2.FindSimilarRequest(
        image=common_pb2.ImageInput(data=_png(1)), top_k=3), timeout=TIMEOUT)
    hit = response.hits[1]
    request = search_pb2.RecordClickRequest(query_id=response.query_id, product_id=hit.product_id,
                                            position=hit.position)
    assert stack.stub.RecordClick(request, timeout=TIMEOUT).accepted
    _wait(lambda: len(_clicks(stack, response.query_id)) == 1, "the click row")
    (row,) = _clicks(stack, response.query_id)
    assert (row.click_id, row.product_id, row.position) == (click_id(response.query_id, hit.product_id),
                                                            hit.product_id, 1)

    handled = stack.consumer.writer.recorded + stack.consumer.writer.duplicates
    assert stack.stub.RecordClick(request, timeout=TIMEOUT).accepted  # the shopper clicks again
    _wait(lambda: stack.consumer.writer.recorded + stack.consumer.writer.duplicates == handled + 1,
          "the second click to be consumed")
    assert len(_clicks(stack, response.query_id)) == 1
    assert stack.consumer.is_alive() and stack.consumer.error is None


def test_a_poison_click_goes_to_the_dlq_and_blocks_nothing(stack: Stack) -> None:
    producer = make_producer(stack.bootstrap)
    try:
        producer.send(stack.topic, key=b"q", value=b"{not a click").get(timeout=10)
    finally:
        producer.close(timeout=5)
    response = stack.stub.FindSimilar(search_pb2.FindSimilarRequest(product_id="p0", top_k=1), timeout=TIMEOUT)
    hit = response.hits[0]
    assert stack.stub.RecordClick(search_pb2.RecordClickRequest(
        query_id=response.query_id, product_id=hit.product_id, position=0), timeout=TIMEOUT).accepted
    _wait(lambda: len(_clicks(stack, response.query_id)) == 1, "the click after the poison record")

    dlq = KafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        dlq.assign([TopicPartition(stack.dlq_topic, 0)])
        found: list = []
        _wait(lambda: found.extend(m for ms in dlq.poll(timeout_ms=500).values() for m in ms) or bool(found),
              "the DLQ record")
    finally:
        dlq.close()
    assert found[0].value == b"{not a click"
    assert b"SearchClick" in dict(found[0].headers)[HEADER_ERROR_REASON]
