"""Catalogue ingestion against real stores: the core on SQLite and PostgreSQL, then the Kafka worker end to end.

The worker tests share one pipeline (a Tansu broker from the session fixture, unique topic names, a SQLite
file database, Qdrant Edge in tmp_path, the tiny untrained model) and run in file order: index the
synthetic catalogue, replay it, feed it poison, delete a product. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from PIL import Image
from sqlalchemy.engine import make_url

from fashion.v1 import events_pb2
from services.ingest.consumer import IngestWorker, WorkerConfig
from services.ingest.core import IncomingEvent, IngestCore, Status
from services.ingest.domain import ProductIndexed
from services.ingest.events import build_delete_event, build_upsert_event, event_to_json, parse_indexed
from services.ingest.publish import events_from_folder, publish
from shared.db import create_database_if_missing, drop_database, make_engine, session_factory, sqlite_url, upgrade
from shared.db.models import Image as ImageRow
from shared.db.models import ImagePrediction, IndexedAnnouncement, ProcessedEvent, Product
from shared.errors import NotFound
from shared.imaging import ImageIntake, ImageLimits, IntakePolicy
from shared.messaging import HEADER_ERROR_REASON, HEADER_ERROR_TYPE, HEADER_ORIGINAL_TOPIC, make_producer
from shared.serving.runtime import ModelRuntime
from shared.vectorstore import SERVING_ALIAS, VectorStore, open_store

WAIT_S = 30.0
ITEMS = 6
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims 900 megapixels: decoding it naively would need ~900 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress((b"\x00" * (width + 1)) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(seed: int, size: int = 80) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint: Path) -> Iterator[ModelRuntime]:
    model = ModelRuntime(engine="eager", max_batch=32, max_wait_ms=1)
    model.load(tiny_checkpoint)
    yield model
    model.close()


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> ImageIntake:
    """A catalogue intake whose roots hold every folder these tests make (not the rest of the machine)."""
    return ImageIntake(ImageLimits(max_side=256), IntakePolicy(roots=(tmp_path_factory.getbasetemp(),)))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.data.synth import generate

    root = tmp_path_factory.mktemp("c2s")
    generate("consumer2shop", root, ITEMS, seed=1, image_size=96, workers=1, progress=False)
    return root


def _shop_images(catalog: Path) -> int:
    return sum(len(e.images) for e in events_from_folder(catalog))


@dataclass
class Stores:
    factory: sa.orm.sessionmaker
    store: VectorStore

    def count(self, model: type, *where: sa.ColumnElement[bool]) -> int:
        with self.factory() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)

    def snapshot(self) -> dict[str, object]:
        """Everything the sinks wrote, minus timestamps and the event ledger."""
        with self.factory() as session:
            products = sorted((p.product_id, p.title, p.brand, str(p.price), p.currency, p.in_stock, p.category,
                               tuple(p.attributes), p.deleted) for p in session.scalars(sa.select(Product)))
            images = sorted((i.image_id, i.product_id, i.uri, i.sha256, i.width, i.height)
                            for i in session.scalars(sa.select(ImageRow)))
            predictions = sorted((p.image_id, p.model_version, p.category, round(p.category_score, 5))
                                 for p in session.scalars(sa.select(ImagePrediction)))
        points = []
        if self.store.alias_target() is not None:
            points = sorted((pid, tuple(sorted((k, str(v)) for k, v in payload.items())))
                            for pid, payload in self.store.payloads("products").items())
        return {"products": products, "images": images, "predictions": predictions, "points": points}


def _open_stores(url: str, qdrant_path: Path) -> tuple[Stores, Callable[[], None]]:
    upgrade(url)
    engine = make_engine(url)
    store = open_store(qdrant_path)

    def close() -> None:
        store.close()
        engine.dispose()

    return Stores(session_factory(engine), store), close


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "fashion.db")
    else:
        url = make_url(POSTGRES_SERVER).set(database=f"fashion_ingest_{uuid.uuid4().hex[:10]}").render_as_string(
            hide_password=False)
        assert create_database_if_missing(url), f"could not create {url}"
    opened, close = _open_stores(url, tmp_path / "qdrant")
    try:
        yield opened
    finally:
        close()
        drop_database(url)


# -- the core, no Kafka --------------------------------------------------------------------------------------


def test_core_indexes_once_and_replays_change_nothing(stores: Stores, runtime: ModelRuntime, catalog: Path,
                                                      intake: ImageIntake) -> None:
    announced: list[ProductIndexed] = []
    core = IngestCore(runtime, stores.factory, stores.store, intake, on_indexed=announced.append)
    events = list(events_from_folder(catalog))
    images = _shop_images(catalog)

    result = core.process([IncomingEvent.of(e, offset=i) for i, e in enumerate(events)])
    assert result.counts() == {"indexed": ITEMS} and result.images == images and result.model_version == "tiny-1"
    assert stores.store.alias_target() == "tiny-1"  # the first batch created the serving collection
    assert stores.count(Product) == ITEMS and stores.count(ImageRow) == images
    assert stores.count(ImagePrediction) == images and stores.store.count("products") == images
    assert sorted(m.product_id for m in announced) == sorted(e.product.product_id for e in events)
    assert all(m.model_version == "tiny-1" and m.images >= 1 for m in announced)
    with stores.factory() as session:
        product = session.get(Product, events[0].product.product_id)
        assert product is not None and product.title == events[0].product.title and product.category
    hit = stores.store.search("products", stores.store.get_vector("products", "id_00000001"), top_k=1)[0]
    assert hit.product_id == "id_00000001"
    payload_keys = {"category", "attributes", "price", "in_stock", "title", "brand", "currency", "image_uri"}
    assert payload_keys <= set(hit.payload)
    before = stores.snapshot()

    # The same events again (at-least-once redelivery): skipped by event id, nothing written.
    again = core.process([IncomingEvent.of(e, offset=i) for i, e in enumerate(events)])
    assert again.counts() == {"duplicate": ITEMS} and len(announced) == ITEMS
    # The same content under new event ids: rewritten onto the same rows and point ids.
    revised = events_from_folder(catalog, revision="2")
    fresh = core.process([IncomingEvent.of(e, offset=i) for i, e in enumerate(revised)])
    assert fresh.counts() == {"indexed": ITEMS}
    assert stores.snapshot() == before
    assert stores.count(ProcessedEvent) == 2 * ITEMS


def test_core_fails_poison_alone_and_raises_for_infrastructure(tmp_path: Path, runtime: ModelRuntime,
                                                              intake: ImageIntake) -> None:
    opened, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        good = build_upsert_event("good", [_jpeg(1)], title="Good")
        twice = build_upsert_event("two-views", [_jpeg(2), _jpeg(3)], title="Two views")
        batch = [IncomingEvent(b"not json"),
                 IncomingEvent.of(build_upsert_event("garbage", [_jpeg(4), b"GIF89a garbage"])),
                 IncomingEvent.of(build_upsert_event("bomb", [_bomb_png()])),
                 IncomingEvent.of(build_upsert_event("missing", [tmp_path / "nowhere.jpg"])),
                 IncomingEvent.of(good), IncomingEvent.of(good), IncomingEvent.of(twice)]

        class Broken:
            def get(self, version: str | None = None):
                return runtime.get(version)

            def analyze(self, images, version=None, timeout=None):
                raise ConnectionError("model service down")

        with pytest.raises(ConnectionError):
            IngestCore(Broken(), opened.factory, opened.store, intake).process(batch)
        assert opened.count(ProcessedEvent) == 0 and opened.count(Product) == 0

        result = IngestCore(runtime, opened.factory, opened.store, intake).process(batch)
        statuses = [o.status for o in result.outcomes]
        assert statuses == [Status.FAILED] * 4 + [Status.INDEXED, Status.DUPLICATE, Status.INDEXED]
        reasons = [o.reason for o in result.outcomes[:4]]
        assert "invalid JSON" in reasons[0]
        assert "product garbage): image #1" in reasons[1] and "no decoder recognises" in reasons[1]
        assert "product bomb): image #0" in reasons[2] and "pixels" in reasons[2]
        assert result.outcomes[2].error_type == "TooLarge"
        assert "nowhere.jpg" in reasons[3] and "expected inline image bytes, or a file under the" in reasons[3]
        assert opened.count(Product) == 2 and opened.count(ImageRow) == 3 and opened.store.count("products") == 3
        assert opened.count(ProcessedEvent) == 2

        # A re-upload with one picture fewer replaces the picture set in both stores.
        fewer = build_upsert_event("two-views", [_jpeg(3)], title="One view now")
        core = IngestCore(runtime, opened.factory, opened.store, intake)
        assert core.process([IncomingEvent.of(fewer)]).counts() == {"indexed": 1}
        assert opened.count(ImageRow, ImageRow.product_id == "two-views") == 1
        assert opened.count(ImagePrediction) == 2 and opened.store.count("products") == 2
    finally:
        close()


def test_core_applies_a_product_named_twice_in_one_batch_in_order(stores: Stores, runtime: ModelRuntime,
                                                                  intake: ImageIntake) -> None:
    """Writes are bulk per run of distinct products; a repeated product starts a new run, so the last event wins."""
    batch = [build_upsert_event("p", [_jpeg(10), _jpeg(11)], title="P first"),
             build_upsert_event("q", [_jpeg(12)], title="Q"),
             build_upsert_event("p", [_jpeg(13)], title="P again"),
             build_delete_event("q"),
             build_upsert_event("r", [_jpeg(14)], title="R")]
    result = IngestCore(runtime, stores.factory, stores.store, intake).process(
        [IncomingEvent.of(e, offset=i) for i, e in enumerate(batch)])
    assert [o.status for o in result.outcomes] == [Status.INDEXED, Status.INDEXED, Status.INDEXED, Status.DELETED,
                                                   Status.INDEXED]
    with stores.factory() as session:
        titles = {p.product_id: (p.title, p.deleted) for p in session.scalars(sa.select(Product))}
    assert titles == {"p": ("P again", False), "q": ("Q", True), "r": ("R", False)}
    assert stores.count(ImageRow, ImageRow.product_id == "p") == 1 and stores.count(ImagePrediction) == 3
    assert stores.store.count("products") == 2  # p's one image and r's; q's point went with its delete
    assert stores.count(ProcessedEvent) == 5


def _own_topics(prefix: str, **settings: object) -> WorkerConfig:
    """A worker on topics and a group of its own (`prefix` plus a random suffix), 2 partitions, short polls."""
    suffix = uuid.uuid4().hex[:8]
    return WorkerConfig(topic=f"{prefix}.uploads.{suffix}", dlq_topic=f"{prefix}.dlq.{suffix}",
                        indexed_topic=f"{prefix}.indexed.{suffix}", group_id=f"{prefix}-{suffix}", partitions=2,
                        poll_timeout_ms=200, **settings)  # type: ignore[arg-type]


def _points_of(stores: Stores, product_id: str) -> list[dict]:
    """The payloads of `product_id`'s points in the serving collection."""
    return [p for p in stores.store.payloads(SERVING_ALIAS).values() if p.get("product_id") == product_id]


def test_core_applies_the_newest_event_of_a_product_whatever_the_arrival_order(
        stores: Stores, runtime: ModelRuntime, intake: ImageIntake) -> None:
    """Two producers hashing keys differently put one product's events on two partitions: they may arrive
    out of order. The event that occurred last wins in both stores; an older one arriving later is STALE."""
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    core = IngestCore(runtime, stores.factory, stores.store, intake)

    def product(product_id: str) -> Product:
        with stores.factory() as session:
            return session.get(Product, product_id)

    newer = build_upsert_event("p", [_jpeg(20)], title="P new", occurred_at=t0 + timedelta(minutes=1))
    older = build_upsert_event("p", [_jpeg(21), _jpeg(22)], title="P old", occurred_at=t0)
    assert core.process([IncomingEvent.of(newer, partition=1)]).counts() == {"indexed": 1}
    late = core.process([IncomingEvent.of(older, partition=0)])
    assert [o.status for o in late.outcomes] == [Status.STALE] and late.failed == [] and late.indexed == []
    assert (product("p").title, product("p").event_occurred_at) == ("P new", t0 + timedelta(minutes=1))
    assert stores.count(ImageRow, ImageRow.product_id == "p") == 1
    assert [pt["title"] for pt in _points_of(stores, "p")] == ["P new"]
    # Its replay is a plain duplicate (it was claimed), and out of order within one batch is the same.
    assert core.process([IncomingEvent.of(older)]).counts() == {"duplicate": 1}
    batch = [build_upsert_event("p", [_jpeg(23)], title="P newest", occurred_at=t0 + timedelta(minutes=3)),
             build_upsert_event("p", [_jpeg(24)], title="P older", occurred_at=t0 + timedelta(minutes=2))]
    assert core.process([IncomingEvent.of(e) for e in batch]).counts() == {"indexed": 1, "stale": 1}
    assert product("p").title == "P newest" and [pt["title"] for pt in _points_of(stores, "p")] == ["P newest"]

    # A delete that overtakes the upsert it followed, for a product never seen: the upsert must not list it.
    gone = build_delete_event("q", occurred_at=t0 + timedelta(minutes=5))
    listed = build_upsert_event("q", [_jpeg(25)], title="Q", occurred_at=t0 + timedelta(minutes=4))
    result = core.process([IncomingEvent.of(gone), IncomingEvent.of(listed)])
    assert [o.status for o in result.outcomes] == [Status.DELETED, Status.STALE]
    assert product("q").deleted and _points_of(stores, "q") == []
    # ... and a later upsert lists it again.
    back = build_upsert_event("q", [_jpeg(26)], title="Q again", occurred_at=t0 + timedelta(minutes=6))
    assert core.process([IncomingEvent.of(back)]).counts() == {"indexed": 1}
    assert (product("q").title, product("q").deleted) == ("Q again", False) and len(_points_of(stores, "q")) == 1

    # Without occurred_at, today's behaviour: applied in arrival order, the product keeps its time.
    untimed = build_upsert_event("p", [_jpeg(27)], title="P untimed")
    assert core.process([IncomingEvent.of(untimed)]).counts() == {"indexed": 1}
    assert (product("p").title, product("p").event_occurred_at) == ("P untimed", t0 + timedelta(minutes=3))
    stale_delete = build_delete_event("p", occurred_at=t0 + timedelta(minutes=2, seconds=30))
    assert core.process([IncomingEvent.of(stale_delete)]).counts() == {"stale": 1}
    assert not product("p").deleted and [pt["title"] for pt in _points_of(stores, "p")] == ["P untimed"]


def test_two_workers_applying_one_product_at_once_leave_the_newest_in_both_stores(
        stores: Stores, runtime: ModelRuntime, intake: ImageIntake) -> None:
    """The product's row lock is held while Qdrant is written, so concurrent workers take turns in both stores."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    cores = [IngestCore(runtime, stores.factory, stores.store, intake) for _ in range(2)]
    cores[0].process([IncomingEvent.of(build_upsert_event("warm-up", [_jpeg(30)], title="W"))])  # the collection
    for round_ in range(4):
        # Round by round, the older event goes to the other worker.
        events = [build_upsert_event("r", [_jpeg(40 + 2 * round_ + i)], title=f"R {round_}.{i}",
                                     occurred_at=t0 + timedelta(minutes=2 * round_ + i)) for i in (0, 1)]
        barrier = threading.Barrier(2)

        def apply(core: IngestCore, event: events_pb2.CatalogEvent, barrier: threading.Barrier = barrier) -> Status:
            barrier.wait()
            return core.process([IncomingEvent.of(event)]).outcomes[0].status

        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(apply, cores[::1 if round_ % 2 else -1], events))
        # The older one is STALE when the newer got the lock first, else both apply in time order.
        assert statuses[1] is Status.INDEXED and statuses[0] in (Status.INDEXED, Status.STALE)
        with stores.factory() as session:
            assert session.get(Product, "r").title == f"R {round_}.1"
        assert [pt["title"] for pt in _points_of(stores, "r")] == [f"R {round_}.1"]


def test_core_reads_only_what_the_input_policy_allows(tmp_path: Path, runtime: ModelRuntime,
                                                     image_server) -> None:
    """Files outside the roots (also by symlink or ..), a loopback URL and a redirect to one fail alike, saying
    nothing about them; the product with allowed pictures is indexed, its width and height those of the upload."""
    root, outside = tmp_path / "catalog", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_jpeg(20))
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "big.png").write_bytes(_png_of(1200, 900))
    image_server.images["a.jpg"] = _jpeg(21)
    intake = ImageIntake(ImageLimits(max_side=256), IntakePolicy(roots=(root,), url_hosts=(image_server.host,)))
    loopback = image_server.url("img/a.jpg")  # allow-listed, but loopback and not in a private network setting
    refused = {"outside": outside / "secret.jpg", "symlink": str(root / "escape.jpg"),  # a str: not resolved
               "dotdot": f"{root}/../private/secret.jpg", "loopback": loopback,
               "redirect": image_server.url(f"redirect?to={loopback}")}
    opened, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        batch = [IncomingEvent.of(build_upsert_event(key, [source])) for key, source in refused.items()]
        batch.append(IncomingEvent.of(build_upsert_event("allowed", [root / "big.png", _jpeg(22)])))
        result = IngestCore(runtime, opened.factory, opened.store, intake).process(batch)
        assert [o.status for o in result.outcomes] == [Status.FAILED] * len(refused) + [Status.INDEXED]
        for outcome in result.outcomes[:-1]:
            assert outcome.reason.endswith(": expected inline image bytes, or a file under the catalogue roots, or "
                                           "an http(s) URL on an allowed host"), outcome.reason
        assert "private" not in result.outcomes[1].reason  # where the symlink leads is not the sender's business
        assert image_server.requests == []  # refused before any connection
        with opened.factory() as session:
            sizes = sorted((i.width, i.height) for i in session.scalars(sa.select(ImageRow)))
        assert sizes == [(80, 80), (1200, 900)]  # as uploaded, though decoded at most 256 px a side
    finally:
        close()


def test_a_dripping_image_host_cannot_hold_a_batch_past_its_fetch_budget(tmp_path: Path, runtime: ModelRuntime,
                                                                         image_server) -> None:
    """One byte every 3 s never trips a per-read timeout; the batch's fetch budget ends it, the slow event fails
    alone and the batch finishes well inside the consumer's max_poll_interval."""
    image_server.images["slow.jpg"] = _jpeg(30)
    intake = ImageIntake(policy=IntakePolicy(url_hosts=(image_server.host,), private_networks=("127.0.0.1/32",)))
    opened, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        core = IngestCore(runtime, opened.factory, opened.store, intake, fetch_budget_s=2.0)
        batch = [IncomingEvent.of(build_upsert_event("slow", [image_server.url("drip/slow.jpg")])),
                 IncomingEvent.of(build_upsert_event("fast", [_jpeg(31)]))]
        start = time.monotonic()
        result = core.process(batch)
        assert time.monotonic() - start < 10
        assert [o.status for o in result.outcomes] == [Status.FAILED, Status.INDEXED]
        assert "expected the image URL to deliver the image before the deadline" in result.outcomes[0].reason
    finally:
        close()


def test_every_exception_decoding_a_record_is_that_records_failure(tmp_path: Path, runtime: ModelRuntime,
                                                                   intake: ImageIntake, monkeypatch) -> None:
    import services.ingest.core as core_module

    real_decode = core_module.decode_event

    def decode(value, limits):
        if b"explode" in value:
            raise KeyError("a bug in decoding")
        return real_decode(value, limits)

    monkeypatch.setattr(core_module, "decode_event", decode)
    opened, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        good = build_upsert_event("good", [_jpeg(40)])
        batch = [IncomingEvent(b'{"eventId": "t", "type": 99, "product": {"productId": "p"}}'),
                 IncomingEvent(b'{"eventId": "explode", "type": "EVENT_TYPE_DELETE", "product": {"productId": "p"}}'),
                 IncomingEvent(json.dumps({**json.loads(event_to_json(good)), "newField": {"x": 1}}).encode())]
        result = IngestCore(runtime, opened.factory, opened.store, intake).process(batch)
        assert [o.status for o in result.outcomes] == [Status.FAILED, Status.FAILED, Status.INDEXED]
        assert "got 99" in result.outcomes[0].reason
        assert result.outcomes[1].reason == ("expected a valid CatalogEvent, decoding it failed: "
                                             "KeyError: 'a bug in decoding'")
    finally:
        close()


def test_remote_analyzer_matches_the_in_process_runtime(runtime: ModelRuntime) -> None:
    from services.models.server import model_servicers
    from shared.grpc.server import create_server
    from shared.imaging import ImageIntake
    from shared.serving.remote import RemoteAnalyzer

    server, port = create_server(model_servicers(runtime, ImageIntake(), targets=("analysis",)))
    remote = RemoteAnalyzer(f"127.0.0.1:{port}", timeout=30, max_request_bytes=30_000)  # forces several requests
    try:
        images = [Image.open(io.BytesIO(_jpeg(seed))).convert("RGB") for seed in range(3)]
        local, far = runtime.analyze(images), remote.analyze(images)
        assert len(far) == 3
        for a, b in zip(local, far, strict=True):
            assert b.version == a.version == "tiny-1"
            np.testing.assert_allclose(b.embedding, a.embedding, atol=1e-5)
            assert [n for n, _ in b.categories] == [n for n, _ in a.categories]
            assert [n for n, _, _ in b.attributes] == [n for n, _, _ in a.attributes]
            assert [(lm.name, lm.visibility) for lm in b.landmarks] == [(lm.name, lm.visibility) for lm in a.landmarks]
            assert b.category()[1] == pytest.approx(a.category()[1], abs=1e-5)
        model = remote.get()
        meta = runtime.get().metadata
        assert model.version == "tiny-1" and model.metadata.embedding_dim == meta.embedding_dim == 32
        assert set(model.metadata.categories) == {c.name for c in meta.categories}
        assert remote.get("tiny-1") is remote.get("tiny-1")
        with pytest.raises(NotFound, match="not loaded"):
            remote.get("no-such-version")
    finally:
        remote.close()
        server.stop(0)


# -- the Kafka worker, end to end ----------------------------------------------------------------------------


class FlakyAnalyzer:
    """The runtime, except that the first `failures` analyze calls raise (a model service restarting)."""

    def __init__(self, runtime: ModelRuntime, failures: int) -> None:
        self.runtime = runtime
        self.failures = failures
        self.calls = 0

    def get(self, version: str | None = None):
        return self.runtime.get(version)

    def analyze(self, images, version=None, timeout=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("analysis service unavailable")
        return self.runtime.analyze(images, version, timeout=timeout)


@dataclass
class Pipeline:
    bootstrap: str
    config: WorkerConfig
    stores: Stores
    worker: IngestWorker
    analyzer: FlakyAnalyzer
    catalog: Path

    def publish(self, events: list[events_pb2.CatalogEvent]) -> int:
        return publish(self.bootstrap, events, topic=self.config.topic, partitions=self.config.partitions,
                       progress=False)

    def read(self, topic: str, at_least: int, timeout_s: float = WAIT_S, settle_s: float = 0.0) -> list:
        """Every record of `topic` from the beginning, once `at_least` arrived (then `settle_s` more polling)."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                 auto_offset_reset="earliest")
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            records: list = []
            deadline = time.monotonic() + timeout_s
            settle_until: float | None = None
            while time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
                if len(records) >= at_least:
                    settle_until = settle_until or time.monotonic() + settle_s
                    if time.monotonic() >= settle_until:
                        return records
            raise AssertionError(f"timed out waiting for {at_least} records on {topic}, got {len(records)}")
        finally:
            consumer.close()

    def stat(self, name: str) -> int:
        return self.worker.stats().get(name, 0)


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, runtime: ModelRuntime, catalog: Path, intake: ImageIntake,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    config = WorkerConfig(topic=f"catalog.uploads.{suffix}", dlq_topic=f"catalog.uploads.dlq.{suffix}",
                          indexed_topic=f"catalog.indexed.{suffix}", group_id=f"ingest-{suffix}", partitions=2,
                          max_records=16, poll_timeout_ms=200)
    root = tmp_path_factory.mktemp("ingest")
    stores, close = _open_stores(sqlite_url(root / "fashion.db"), root / "qdrant")
    analyzer = FlakyAnalyzer(runtime, failures=1)
    worker = IngestWorker(IngestCore(analyzer, stores.factory, stores.store, intake), kafka_bootstrap, config)
    worker.start()
    try:
        yield Pipeline(kafka_bootstrap, config, stores, worker, analyzer, catalog)
    finally:
        assert worker.stop(timeout=15), "worker thread did not stop"
        assert worker.error is None
        close()


def test_worker_indexes_the_catalogue_once_through_kafka(pipeline: Pipeline) -> None:
    events = list(events_from_folder(pipeline.catalog))
    images = _shop_images(pipeline.catalog)
    assert pipeline.publish(events) == ITEMS
    stores = pipeline.stores
    _wait(lambda: stores.count(ProcessedEvent) == ITEMS, f"{ITEMS} events indexed")
    assert stores.count(Product) == ITEMS and stores.count(ImageRow) == images
    assert stores.store.count("products") == images
    assert pipeline.analyzer.calls >= 2  # the first batch failed on the "model" and was retried, nothing lost
    announced = [parse_indexed(r.value) for r in pipeline.read(pipeline.config.indexed_topic, ITEMS)]
    assert sorted(m.product_id for m in announced) == sorted(e.product.product_id for e in events)
    assert {m.event_id for m in announced} == {e.event_id for e in events}
    before = stores.snapshot()

    # Publishing the same folder again: same event ids, all skipped, nothing announced, nothing changed.
    assert pipeline.publish(list(events_from_folder(pipeline.catalog))) == ITEMS
    _wait(lambda: pipeline.stat("duplicate") >= ITEMS, "the replay to be consumed")
    assert stores.snapshot() == before and stores.count(ProcessedEvent) == ITEMS
    assert len(pipeline.read(pipeline.config.indexed_topic, ITEMS, settle_s=0.5)) == ITEMS


def test_worker_sends_poison_to_the_dlq_and_indexes_the_rest(pipeline: Pipeline, tmp_path: Path) -> None:
    good = build_upsert_event("good-after-poison", [_jpeg(7)], title="Survivor")
    poison = {
        "bad-json": b'{"eventId": "x", "type": ',
        "garbage": event_to_json(build_upsert_event("garbage", [_jpeg(8), b"\x00garbage bytes"])),
        "bomb": event_to_json(build_upsert_event("bomb", [_bomb_png()])),
        "no-product": b'{"eventId": "np", "type": "EVENT_TYPE_UPSERT", "images": [{"uri": "/x.jpg"}]}',
        "type-99": b'{"eventId": "t99", "type": 99, "product": {"productId": "type-99"}}',
        "outside-roots": event_to_json(build_upsert_event("outside-roots", ["/etc/passwd"])),
    }
    producer = make_producer(pipeline.bootstrap)
    try:
        for key, value in poison.items():
            producer.send(pipeline.config.topic, key=key.encode(), value=value)
        # A field this worker does not know yet is ignored (proto3 JSON), not poison.
        newer = json.dumps({**json.loads(event_to_json(good)), "colour": "red"}).encode()
        producer.send(pipeline.config.topic, key=b"good-after-poison", value=newer)
        producer.flush(timeout=10)
    finally:
        producer.close()
    dlq = {r.key.decode(): r for r in pipeline.read(pipeline.config.dlq_topic, len(poison))}
    assert set(dlq) == set(poison)
    for key, record in dlq.items():
        headers = dict(record.headers)
        assert record.value == poison[key]  # the original bytes, untouched
        assert headers[HEADER_ORIGINAL_TOPIC].decode() == pipeline.config.topic
        assert headers[HEADER_ERROR_REASON] and headers[HEADER_ERROR_TYPE]
    reason = {k: dict(r.headers)[HEADER_ERROR_REASON].decode() for k, r in dlq.items()}
    assert "invalid JSON" in reason["bad-json"]
    assert "image #1" in reason["garbage"] and "no decoder recognises" in reason["garbage"]
    assert "image #0" in reason["bomb"] and "pixels" in reason["bomb"]
    assert dict(dlq["bomb"].headers)[HEADER_ERROR_TYPE] == b"TooLarge"
    assert "expected product.product_id" in reason["no-product"]
    assert "expected type EVENT_TYPE_UPSERT or EVENT_TYPE_DELETE, got 99" in reason["type-99"]
    assert reason["outside-roots"].endswith("image #0 (passwd): /etc/passwd: expected inline image bytes, or a file "
                                            "under the catalogue roots")  # not whether the file exists
    _wait(lambda: pipeline.stores.count(Product, Product.product_id == "good-after-poison") == 1,
          "the good event behind the poison")
    assert pipeline.stores.count(Product, Product.product_id.in_(["garbage", "bomb"])) == 0


def test_worker_delete_removes_the_product_from_search(pipeline: Pipeline) -> None:
    store, stores = pipeline.stores.store, pipeline.stores
    pipeline.publish(list(events_from_folder(pipeline.catalog)))  # a no-op replay when the first test ran
    _wait(lambda: stores.count(Product, Product.product_id == "id_00000002") == 1, "the catalogue")
    query = store.get_vector("products", "id_00000002")
    assert "id_00000002" in [h.product_id for h in store.search("products", query, top_k=10)]
    points_before = store.count("products")
    own = stores.count(ImageRow, ImageRow.product_id == "id_00000002")

    assert pipeline.publish([build_delete_event("id_00000002")]) == 1
    _wait(lambda: stores.count(Product, Product.product_id == "id_00000002", Product.deleted.is_(True)) == 1,
          "the product to be marked deleted")
    assert "id_00000002" not in [h.product_id for h in store.search("products", query, top_k=10)]
    assert store.count("products") == points_before - own
    with pytest.raises(NotFound):
        store.get_vector("products", "id_00000002")


class Crash(BaseException):
    """Stands in for the process dying: it gets past every `except Exception`, and nothing after it runs."""


def test_no_announcement_is_lost_when_the_worker_dies_between_commit_and_send(
        kafka_bootstrap: str, runtime: ModelRuntime, catalog: Path, tmp_path: Path, intake: ImageIntake) -> None:
    """The first worker commits a batch (stores, claims and its outbox rows) and dies before announcing it; its
    offsets are not committed. The worker that replaces it finds those events claimed (duplicates, nothing to
    announce from the batch) and its sweep sends what the dead one left in the outbox."""
    from prometheus_client import REGISTRY

    config = _own_topics("crash", max_records=16, outbox_sweep_s=0.5)
    stores, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    swept_before = REGISTRY.get_sample_value("fashion_ingest_announcements_total", {"path": "sweep"}) or 0.0
    try:
        events = list(events_from_folder(catalog))
        # The dead worker's sweeper must not rescue its own rows: in a real crash it dies with the process.
        dying = IngestWorker(IngestCore(runtime, stores.factory, stores.store, intake), kafka_bootstrap,
                             dataclasses.replace(config, outbox_sweep_s=3600))
        dying.start()
        crashed: list[str] = []

        def die(indexed) -> bool:
            crashed.extend(m.event_id for m in indexed)
            raise Crash("killed between the commit and the send")

        dying._relay.send = die  # type: ignore[method-assign, union-attr]
        dying._relay.sweep = lambda created_before: 0  # type: ignore[method-assign, union-attr] (dies with it)
        assert publish(kafka_bootstrap, events, topic=config.topic, partitions=2, progress=False) == ITEMS
        _wait(lambda: isinstance(dying.error, Crash), "the worker to die after its first batch")
        dying.stop(timeout=15)
        assert crashed and stores.count(ProcessedEvent) >= len(crashed)  # committed, not announced

        reader = Pipeline(kafka_bootstrap, config, stores, None, None, catalog)  # type: ignore[arg-type]
        with IngestWorker(IngestCore(runtime, stores.factory, stores.store, intake), kafka_bootstrap, config):
            _wait(lambda: stores.count(ProcessedEvent) == ITEMS, "every event to be applied")
            announced = {parse_indexed(r.value).event_id for r in reader.read(config.indexed_topic, ITEMS)}
            _wait(lambda: stores.count(IndexedAnnouncement, IndexedAnnouncement.sent_at.is_(None)) == 0,
                  "the outbox to be marked sent")
        assert announced == {e.event_id for e in events}
        swept = REGISTRY.get_sample_value("fashion_ingest_announcements_total", {"path": "sweep"})
        assert swept == swept_before + len(crashed)
    finally:
        close()


def test_a_clean_stop_sends_what_the_outbox_still_holds(kafka_bootstrap: str, runtime: ModelRuntime, catalog: Path,
                                                        tmp_path: Path, intake: ImageIntake) -> None:
    """Every send after a batch fails and the periodic sweep is an hour away: the last sweep on a clean stop
    announces them all (the next incarnation may stop before one sweep period has passed)."""
    config = _own_topics("final", max_records=16, outbox_sweep_s=3600)
    stores, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        events = list(events_from_folder(catalog))
        worker = IngestWorker(IngestCore(runtime, stores.factory, stores.store, intake), kafka_bootstrap, config)
        worker.start()
        worker._relay.send = lambda indexed: False  # type: ignore[method-assign, union-attr] (Kafka refused)
        assert publish(kafka_bootstrap, events, topic=config.topic, partitions=2, progress=False) == ITEMS
        _wait(lambda: stores.count(ProcessedEvent) == ITEMS, "every event to be applied")
        assert stores.count(IndexedAnnouncement, IndexedAnnouncement.sent_at.is_(None)) == ITEMS
        assert worker.stop(timeout=15)
        assert stores.count(IndexedAnnouncement, IndexedAnnouncement.sent_at.is_(None)) == 0
        reader = Pipeline(kafka_bootstrap, config, stores, None, None, catalog)  # type: ignore[arg-type]
        announced = {parse_indexed(r.value).event_id for r in reader.read(config.indexed_topic, ITEMS)}
        assert announced == {e.event_id for e in events}
    finally:
        close()


def test_a_stop_with_drain_ingests_what_was_published_first(kafka_bootstrap: str, runtime: ModelRuntime,
                                                            catalog: Path, intake: ImageIntake,
                                                            tmp_path: Path) -> None:
    """The embedded broker forgets what was not consumed when it stops, so with `drain_s` a stop first
    catches up: every event published before the SIGTERM is in the stores when stop() returns."""
    config = _own_topics("drain", max_records=4, drain_s=60.0)
    stores, close = _open_stores(sqlite_url(tmp_path / "fashion.db"), tmp_path / "qdrant")
    try:
        events = list(events_from_folder(catalog))
        assert publish(kafka_bootstrap, events, topic=config.topic, partitions=2, progress=False) == ITEMS
        worker = IngestWorker(IngestCore(runtime, stores.factory, stores.store, intake), kafka_bootstrap,
                              config).start()
        assert worker.stop(), "the drain did not finish"
        assert worker.error is None
        assert stores.count(ProcessedEvent) == ITEMS
    finally:
        close()
