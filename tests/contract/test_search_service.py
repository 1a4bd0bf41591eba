"""SearchService through a real in-process gRPC server on port 0, over SQLite, Qdrant Edge and a tiny model.

The catalogue is seeded directly through the repository and the vector store with the runtime's own
embeddings of generated images, so an identical query image must rank its product first. The runtime's
default model is a decoy version: search must embed with the version that built the collection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from rich.console import Console

from fashion.v1 import common_pb2, events_pb2, search_pb2, search_pb2_grpc
from services.search.catalogue import CatalogueBrowser
from services.search.click_writer import ClickWriter, click_json, parse_click
from services.search.client import draw_landmarks, find_similar_cli, parse_region, write_html
from services.search.core import Click as SearchClick
from services.search.core import SearchCore, click_id
from services.search.server import search_servicers
from shared.config import ImageSettings
from shared.db import make_engine, repository, session_factory, sqlite_url, upgrade
from shared.db.models import Click
from shared.errors import InvalidInput
from shared.grpc.server import create_server
from shared.imaging import ImageIntake, ImageLimits, ImageSource, IntakePolicy
from shared.serving.runtime import LoadedModel, ModelRuntime
from shared.vectorstore import VectorPoint, VectorStore, open_store
from shared.vectorstore.payload import ProductPayload

VERSION = "tiny-1"
DECOY = "decoy-2"
MAX_MESSAGE_BYTES = 1_000_000
IMAGE_MAX_BYTES = 500_000
DEFAULT_TOP_K = 3
TIMEOUT = 30

# product_id: (category, attributes, price, in_stock, images). p6 was deleted: as ingestion does, it is marked
# deleted in Postgres and its points are gone from Qdrant.
CATALOGUE: dict[str, tuple[str, list[str], float, bool, int]] = {
    "p0": ("tee", ["floral", "cotton"], 20.0, True, 2),
    "p1": ("tee", ["striped"], 35.0, True, 1),
    "p2": ("dress", ["floral"], 80.0, True, 1),
    "p3": ("dress", ["floral", "maxi"], 150.0, False, 1),
    "p4": ("skirt", ["denim"], 45.0, True, 1),
    "p5": ("skirt", ["floral"], 60.0, False, 1),
    "p6": ("dress", [], 70.0, True, 1),
}
DELETED = "p6"
LIVE = {pid for pid in CATALOGUE if pid != DELETED}


def _png(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, 3)
    pixels = np.clip(base + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
    pixels[size // 4: size // 2, :, :] = rng.integers(0, 255, 3)  # a band, so images differ in structure too
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class RecordingAnalyzer:
    """Delegates to the runtime and remembers which version each analyze call asked for."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.versions: list[str | None] = []

    def analyze(self, images, version=None, timeout=60.0):
        self.versions.append(version)
        return self.runtime.analyze(images, version, timeout)

    def get(self, version=None):
        return self.runtime.get(version)


@dataclasses.dataclass
class Env:
    stub: search_pb2_grpc.SearchServiceStub
    empty_stub: search_pb2_grpc.SearchServiceStub
    address: str
    core: SearchCore
    sessions: object
    analyzer: RecordingAnalyzer
    clicks: list[SearchClick]
    images: dict[str, list[Path]]


def _seed(root: Path, runtime: ModelRuntime, sessions, store: VectorStore) -> dict[str, list[Path]]:
    images: dict[str, list[Path]] = {}
    seed = 0
    for pid, (_, _, _, _, count) in CATALOGUE.items():
        for j in range(count):
            path = root / f"{pid}-{j}.png"
            path.write_bytes(_png(seed))
            seed += 1
            images.setdefault(pid, []).append(path)
    paths = [p for ps in images.values() for p in ps]
    analyses = runtime.analyze([Image.open(p).convert("RGB") for p in paths], version=VERSION)
    vectors = dict(zip(paths, (a.embedding for a in analyses), strict=True))
    with sessions.begin() as session:
        for pid, (category, attributes, price, in_stock, _) in CATALOGUE.items():
            repository.upsert_product(session, pid, title=f"Title of {pid}", brand="Acme", price=price,
                                      currency="EUR", in_stock=in_stock, category=category, attributes=attributes)
            for path in images[pid]:
                repository.upsert_image(session, path.stem, pid, uri=str(path))
        repository.mark_product_deleted(session, DELETED)
    store.ensure_collection(VERSION, runtime.get(VERSION).metadata.embedding_dim)
    store.upsert(VERSION, [
        VectorPoint(pid, path.stem, vectors[path], ProductPayload(
            title=f"Title of {pid}", category=category, attributes=tuple(attributes), price=price, in_stock=in_stock,
            brand="Acme", currency="EUR", image_uri=str(path)).to_dict())
        for pid, (category, attributes, price, in_stock, _) in CATALOGUE.items() for path in images[pid]])
    store.delete_product(VERSION, DELETED)
    store.set_alias(VERSION)
    return images


@pytest.fixture(scope="module")
def env(tiny_checkpoint, tmp_path_factory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("search")
    url = sqlite_url(root / "fashion.db")
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    runtime = ModelRuntime(engine="eager", max_batch=8, max_wait_ms=2)
    loaded = runtime.load(tiny_checkpoint)
    runtime.add(LoadedModel(dataclasses.replace(loaded.metadata, version=DECOY), loaded.engine, None),
                make_default=True)
    qdrant = open_store(root / "qdrant")
    empty_qdrant = open_store(":memory:")
    images = _seed(root, runtime, sessions, qdrant)
    analyzer = RecordingAnalyzer(runtime)
    clicks: list[SearchClick] = []
    intake = ImageIntake(ImageLimits(max_bytes=IMAGE_MAX_BYTES))
    core = SearchCore(analyzer, sessions, qdrant, intake, click_sink=clicks.append)
    empty_core = SearchCore(analyzer, sessions, empty_qdrant, intake, click_sink=clicks.append)
    catalogue = CatalogueBrowser(sessions, ImageIntake(policy=IntakePolicy(roots=(root,))))
    server, port = create_server(search_servicers(core, default_top_k=DEFAULT_TOP_K, catalogue=catalogue),
                                 max_message_bytes=MAX_MESSAGE_BYTES)
    empty_server, empty_port = create_server(search_servicers(empty_core))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, grpc.insecure_channel(f"127.0.0.1:{empty_port}") as ech:
            yield Env(search_pb2_grpc.SearchServiceStub(ch), search_pb2_grpc.SearchServiceStub(ech),
                      f"127.0.0.1:{port}", core, sessions, analyzer, clicks, images)
    finally:
        server.stop(0)
        empty_server.stop(0)
        core.close()
        empty_core.close()
        runtime.close()
        qdrant.close()
        empty_qdrant.close()
        engine.dispose()


def _by_image(data: bytes, top_k: int = 100, **filters) -> search_pb2.FindSimilarRequest:
    return search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=data), top_k=top_k,
                                         filters=search_pb2.Filters(**filters))


def _query_bytes() -> bytes:
    return _png(1000)


def _fails(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


# -- FindSimilar ---------------------------------------------------------------------------------------------

def test_find_by_image_returns_ranked_enriched_hits(env: Env) -> None:
    response = env.stub.FindSimilar(_by_image(_query_bytes()), timeout=TIMEOUT)
    uuid.UUID(response.query_id)
    ids = [h.product_id for h in response.hits]
    assert set(ids) == LIVE and len(ids) == len(LIVE)  # p0's two images give one hit; deleted p6 is dropped
    assert [h.position for h in response.hits] == list(range(len(ids)))
    scores = [h.score for h in response.hits]
    assert scores == sorted(scores, reverse=True)
    first = response.hits[0]
    category, attributes, price, in_stock, _ = CATALOGUE[first.product_id]
    assert (first.title, first.brand, first.currency, first.category, list(first.attributes), first.in_stock) == (
        f"Title of {first.product_id}", "Acme", "EUR", category, attributes, in_stock)
    assert first.price == pytest.approx(price)
    assert Path(first.image_uri) in env.images[first.product_id] and first.image_id == Path(first.image_uri).stem
    analysis = response.query_analysis
    assert len(analysis.landmarks) == 8 and analysis.category.name and analysis.categories
    assert (response.model.version, response.model.embedding_dim) == (VERSION, 32)


def test_embeds_with_the_collections_version_not_the_default(env: Env) -> None:
    env.analyzer.versions.clear()
    env.stub.FindSimilar(_by_image(_query_bytes(), top_k=1), timeout=TIMEOUT)
    assert env.analyzer.runtime.default_version == DECOY
    assert env.analyzer.versions == [VERSION]


@pytest.mark.parametrize("product_id", ["p1", "p4"])
def test_identical_image_ranks_its_product_first(env: Env, product_id: str) -> None:
    data = env.images[product_id][0].read_bytes()
    hit = env.stub.FindSimilar(_by_image(data, top_k=2), timeout=TIMEOUT).hits[0]
    assert hit.product_id == product_id and hit.score == pytest.approx(1.0, abs=1e-4)


def test_find_by_product_id_excludes_itself(env: Env) -> None:
    response = env.stub.FindSimilar(search_pb2.FindSimilarRequest(product_id="p2", top_k=100), timeout=TIMEOUT)
    assert {h.product_id for h in response.hits} == LIVE - {"p2"}
    assert not response.HasField("query_analysis")
    assert response.model.version == VERSION and response.model.architecture


def test_top_k_zero_means_the_server_default(env: Env) -> None:
    response = env.stub.FindSimilar(_by_image(_query_bytes(), top_k=0), timeout=TIMEOUT)
    assert len(response.hits) == DEFAULT_TOP_K


@pytest.mark.parametrize(("filters", "expected"), [
    ({"categories": ["dress"]}, {"p2", "p3"}),
    ({"categories": ["dress", "skirt"]}, {"p2", "p3", "p4", "p5"}),
    ({"attributes": ["floral"]}, {"p0", "p2", "p3", "p5"}),
    ({"attributes": ["floral", "maxi"]}, {"p3"}),
    ({"min_price": 30.0, "max_price": 70.0}, {"p1", "p4", "p5"}),
    ({"min_price": 100.0}, {"p3"}),
    ({"max_price": 35.0}, {"p0", "p1"}),
    ({"in_stock_only": True}, {"p0", "p1", "p2", "p4"}),
    ({"categories": ["dress"], "in_stock_only": True}, {"p2"}),
])
def test_filters(env: Env, filters: dict, expected: set[str]) -> None:
    response = env.stub.FindSimilar(_by_image(_query_bytes(), **filters), timeout=TIMEOUT)
    assert {h.product_id for h in response.hits} == expected
    assert [h.position for h in response.hits] == list(range(len(expected)))


@pytest.mark.parametrize(("request_", "code", "message"), [
    (search_pb2.FindSimilarRequest(top_k=5), grpc.StatusCode.INVALID_ARGUMENT,
     "expected exactly one query: an image or a product_id, got neither"),
    (_by_image(_png(1), top_k=-1), grpc.StatusCode.INVALID_ARGUMENT, "expected top_k between 1 and 100, got -1"),
    (_by_image(_png(1), top_k=101), grpc.StatusCode.INVALID_ARGUMENT, "expected top_k between 1 and 100, got 101"),
    (search_pb2.FindSimilarRequest(product_id="nope", top_k=5), grpc.StatusCode.NOT_FOUND,
     "unknown product_id 'nope'"),
    (search_pb2.FindSimilarRequest(product_id=DELETED, top_k=5), grpc.StatusCode.NOT_FOUND,
     f"unknown product_id '{DELETED}'"),
    (search_pb2.FindSimilarRequest(product_id="", top_k=5), grpc.StatusCode.INVALID_ARGUMENT,
     "expected a non-empty product_id"),
    (_by_image(b"definitely not an image"), grpc.StatusCode.INVALID_ARGUMENT, "no decoder recognises"),
    (_by_image(_png(1)[:200]), grpc.StatusCode.INVALID_ARGUMENT, "decodable image"),
    (search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(), top_k=5), grpc.StatusCode.INVALID_ARGUMENT,
     "expected `data` (bytes) or `uri`"),
    (_by_image(_png(1), min_price=50, max_price=10), grpc.StatusCode.INVALID_ARGUMENT,
     "expected min_price <= max_price, got 50.0 > 10.0"),
    (_by_image(_png(1), min_price=-1), grpc.StatusCode.INVALID_ARGUMENT, "expected min_price to be a finite number"),
    (_by_image(b"\x89PNG" + b"x" * (IMAGE_MAX_BYTES + 10)), grpc.StatusCode.RESOURCE_EXHAUSTED,
     f"expected at most {IMAGE_MAX_BYTES} bytes"),
    (_by_image(b"x" * (MAX_MESSAGE_BYTES + 1000)), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
], ids=["neither", "top_k-1", "top_k101", "unknown-product", "deleted-product", "empty-product-id", "garbage",
        "truncated", "no-image-source", "price-range", "negative-price", "image-over-limit", "message-over-limit"])
def test_find_similar_errors(env: Env, request_, code, message) -> None:
    err = _fails(lambda: env.stub.FindSimilar(request_, timeout=TIMEOUT))
    assert err.code() == code and message in err.details(), err.details()


def test_core_rejects_top_k_zero_with_the_range(env: Env) -> None:
    with pytest.raises(InvalidInput, match=re.escape("expected top_k between 1 and 100, got 0")):
        env.core.find_similar(image=ImageSource(data=_query_bytes()), product_id=None, top_k=0)


def test_empty_catalogue_is_failed_precondition(env: Env) -> None:
    err = _fails(lambda: env.empty_stub.FindSimilar(_by_image(_query_bytes(), top_k=5), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no catalogue indexed yet" in err.details()


def test_query_and_impressions_are_stored(env: Env) -> None:
    data = _query_bytes()
    response = env.stub.FindSimilar(_by_image(data, top_k=4, categories=["dress", "tee"], in_stock_only=True),
                                    timeout=TIMEOUT)
    assert env.core.query_log.flush(response.query_id)  # the log is written in the background
    with env.sessions() as session:
        query = repository.get_query(session, response.query_id)
        assert query.query_image == data and query.source_product_id is None
        assert (query.model_version, query.top_k) == (VERSION, 4)
        assert query.filters == {"categories": ["dress", "tee"], "attributes": [], "min_price": None,
                                 "max_price": None, "in_stock_only": True}
        impressions = repository.query_impressions(session, response.query_id)
        shown = [(i.position, i.product_id, i.image_id) for i in impressions]
    assert shown == [(h.position, h.product_id, h.image_id) for h in response.hits] and len(shown) == 3

    by_product = env.stub.FindSimilar(search_pb2.FindSimilarRequest(product_id="p1", top_k=2), timeout=TIMEOUT)
    assert env.core.query_log.flush(by_product.query_id)
    with env.sessions() as session:
        query = repository.get_query(session, by_product.query_id)
        assert query.source_product_id == "p1" and query.query_image is None
        assert len(repository.query_impressions(session, by_product.query_id)) == 2


# -- RecordClick ---------------------------------------------------------------------------------------------

def test_record_click_validates_then_hands_the_click_to_the_sink(env: Env) -> None:
    response = env.stub.FindSimilar(_by_image(_query_bytes(), top_k=3), timeout=TIMEOUT)
    hit = response.hits[1]
    env.clicks.clear()
    request = search_pb2.RecordClickRequest(query_id=response.query_id, product_id=hit.product_id,
                                            position=hit.position)
    assert env.stub.RecordClick(request, timeout=TIMEOUT).accepted
    assert env.stub.RecordClick(request, timeout=TIMEOUT).accepted
    first, again = env.clicks
    assert (first.query_id, first.product_id, first.position) == (response.query_id, hit.product_id, 1)
    assert first.click_id == again.click_id == click_id(response.query_id, hit.product_id)
    assert first.clicked_at is not None and parse_click(click_json(first)) == first  # what the topic carries


def test_record_click_errors(env: Env) -> None:
    response = env.stub.FindSimilar(search_pb2.FindSimilarRequest(product_id="p2", top_k=2), timeout=TIMEOUT)
    shown = response.hits[0]
    cases = [
        (search_pb2.RecordClickRequest(query_id=str(uuid.uuid4()), product_id="p1"), grpc.StatusCode.NOT_FOUND,
         "unknown query_id"),
        (search_pb2.RecordClickRequest(query_id=response.query_id, product_id="p2"),
         grpc.StatusCode.INVALID_ARGUMENT, "'p2' was not shown"),
        (search_pb2.RecordClickRequest(query_id=response.query_id, product_id=shown.product_id, position=7),
         grpc.StatusCode.INVALID_ARGUMENT, "was shown at position 0"),
        (search_pb2.RecordClickRequest(query_id="", product_id="p1"), grpc.StatusCode.INVALID_ARGUMENT,
         "expected a query_id"),
    ]
    env.clicks.clear()
    for request, code, message in cases:
        err = _fails(lambda request=request: env.stub.RecordClick(request, timeout=TIMEOUT))
        assert err.code() == code and message in err.details(), err.details()
    assert env.clicks == []


def test_click_writer_is_idempotent_and_skips_poison(env: Env) -> None:
    response = env.stub.FindSimilar(_by_image(_query_bytes(), top_k=2), timeout=TIMEOUT)
    assert env.core.query_log.flush(response.query_id)  # RecordClick does this before it publishes a click
    hit = response.hits[0]
    click = events_pb2.SearchClick(click_id=click_id(response.query_id, hit.product_id), query_id=response.query_id,
                                   product_id=hit.product_id, position=hit.position)
    click.clicked_at.GetCurrentTime()
    good = json_format.MessageToJson(click).encode()
    unknown = json_format.MessageToJson(events_pb2.SearchClick(click_id="x", query_id="nope", product_id="p1")).encode()
    values = [good, good, b"{not json", b"", b'{"queryId": "q"}', unknown]
    records = [SimpleNamespace(value=v, topic="search.clicks", partition=0, offset=i) for i, v in enumerate(values)]
    writer = ClickWriter(env.sessions)
    poisoned = [(p.record.offset, p.reason) for p in writer.handle(records)]
    assert writer.handle(records[:1]) == []  # a redelivery
    assert (writer.recorded, writer.duplicates, writer.rejected) == (1, 2, 4)
    assert [offset for offset, _ in poisoned] == [2, 3, 4, 5]
    assert "missing click_id, product_id" in poisoned[2][1] and "unknown query_id" in poisoned[3][1]
    with env.sessions() as session:
        rows = session.query(Click).filter_by(query_id=response.query_id).all()
    assert [(r.click_id, r.product_id, r.position) for r in rows] == [(click.click_id, hit.product_id, 0)]


# -- client: table and HTML page ------------------------------------------------------------------------------

def test_write_html_has_the_query_and_every_thumbnail(env: Env, tmp_path: Path) -> None:
    data = _query_bytes()
    response = env.stub.FindSimilar(_by_image(data, top_k=4), timeout=TIMEOUT)
    folders = tuple({path.parent for paths in env.images.values() for path in paths})
    intake = ImageIntake(policy=IntakePolicy(roots=folders))  # the CLI's: result thumbnails under the roots
    page = write_html(tmp_path / "out" / "page.html", data, response, intake=intake).read_text(encoding="utf-8")
    assert page.count('src="data:image/jpeg;base64,') == 1 + len(response.hits) == 5
    assert 'alt="query photo"' in page and response.query_id in page
    assert response.query_analysis.category.name in page
    for hit in response.hits:
        assert f"Title of {hit.product_id}" in page
    assert "http" not in page.replace("<!doctype html>", "")  # self-contained: nothing fetched from elsewhere


def test_write_html_without_local_images_uses_placeholders(tmp_path: Path) -> None:
    response = search_pb2.FindSimilarResponse(query_id="q1", hits=[
        search_pb2.SearchHit(product_id="a", title="<b>A & B</b>", image_uri="https://cdn.example/a.jpg"),
        search_pb2.SearchHit(product_id="b", position=1, image_uri="/nonexistent/b.jpg")])
    page = write_html(tmp_path / "p.html", _png(5), response).read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") == 1 and page.count("no local image") == 2
    assert "&lt;b&gt;A &amp; B&lt;/b&gt;" in page


def test_draw_landmarks_marks_visible_and_occluded_points() -> None:
    image = Image.new("RGB", (100, 100), "white")
    landmarks = [common_pb2.Landmark(name="left_collar", x=0.25, y=0.25, visibility=common_pb2.VISIBILITY_VISIBLE),
                 common_pb2.Landmark(name="right_collar", x=0.75, y=0.75, visibility=common_pb2.VISIBILITY_ABSENT)]
    out = draw_landmarks(image, landmarks)
    assert out.getpixel((25, 25)) != (255, 255, 255) and out.getpixel((75, 75)) == (255, 255, 255)
    assert image.getpixel((25, 25)) == (255, 255, 255)  # the original is left alone


def test_find_similar_cli_prints_a_table_and_writes_the_page(env: Env, tmp_path: Path) -> None:
    query = tmp_path / "shopper.png"
    query.write_bytes(env.images["p4"][0].read_bytes())
    console = Console(record=True, width=160)
    response = find_similar_cli(env.address, query, top_k=3, html=tmp_path / "page.html", timeout=TIMEOUT,
                                console=console)
    text = console.export_text()
    assert response.hits[0].product_id == "p4" and "Title of p4" in text and "in stock" in text
    assert (tmp_path / "page.html").is_file()
    with pytest.raises(InvalidInput, match="expected top_k between 1 and 100, got 101"):
        find_similar_cli(env.address, query, top_k=101, timeout=TIMEOUT, console=console)
    with pytest.raises(InvalidInput, match="expected an existing image file"):
        find_similar_cli(env.address, tmp_path / "missing.png", timeout=TIMEOUT, console=console)
    # `fashion search --region`: the box goes to the server, which checks it
    framed = find_similar_cli(env.address, query, top_k=3, timeout=TIMEOUT, console=console,
                              region=parse_region("0.0, 0.0, 1.0, 1.0"))
    assert framed.hits and not framed.garments  # a region is searched alone: no garment detection
    with pytest.raises(InvalidInput, match="expected region as fractions of the image"):
        find_similar_cli(env.address, query, top_k=3, timeout=TIMEOUT, console=console,
                         region=parse_region("0.5,0.5,0.2,0.9"))
    with pytest.raises(InvalidInput, match="expected --region x1,y1,x2,y2"):
        parse_region("0.1,0.2,0.6")


# -- query images by URI: the public intake's policy, and slow URLs under load --------------------------------


@contextlib.contextmanager
def _search_with(env: Env, intake: ImageIntake, **server_kw) -> Iterator[tuple[search_pb2_grpc.SearchServiceStub,
                                                                                str]]:
    """The catalogue of `env`, served by another SearchService whose query images go through `intake`:
    (stub, address)."""
    core = SearchCore(env.core.analyzer, env.core.sessions, env.core.store, intake, click_sink=lambda click: None)
    server, port = create_server(search_servicers(core), **server_kw)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield search_pb2_grpc.SearchServiceStub(ch), f"127.0.0.1:{port}"
    finally:
        server.stop(0)
        core.close()


def _by_uri(uri: str) -> search_pb2.FindSimilarRequest:
    return search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(uri=uri), top_k=3)


def test_find_similar_reads_no_server_file_and_only_allowed_urls(env: Env, image_server) -> None:
    """The attack: a catalogue file, a file outside any catalogue, loopback URLs and a redirect to one as the query
    image. FindSimilar reads none of them and answers each alike; an allowed image URL is searched."""
    folder = env.images["p4"][0].parent
    image_server.images["p4.png"] = env.images["p4"][0].read_bytes()
    catalogue = ImageIntake(ImageLimits(max_bytes=IMAGE_MAX_BYTES),
                            IntakePolicy(roots=(folder,), url_hosts=(image_server.host, "127.0.0.1:9"),
                                         private_networks=("127.0.0.1/32",)))
    attacks = [str(env.images["p4"][0]), env.images["p4"][0].as_uri(), str(folder / "missing.png"), "/etc/hostname",
               f"http://127.0.0.2:{image_server.port}/img/p4.png", "http://127.0.0.1:9/closed.png",
               image_server.url("redirect?to=http://127.0.0.2:1/"), image_server.url("img/missing.png")]
    with _search_with(env, catalogue.for_public()) as (stub, _):
        hits = stub.FindSimilar(_by_uri(image_server.url("img/p4.png")), timeout=TIMEOUT).hits
        assert hits[0].product_id == "p4"
        for uri in attacks:
            err = _fails(lambda uri=uri: stub.FindSimilar(_by_uri(uri), timeout=TIMEOUT))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, uri
            assert err.details() == "query image: expected inline image bytes, or an http(s) URL on an allowed host"
    assert image_server.requests == ["/img/p4.png", "/redirect?to=http://127.0.0.2:1/", "/img/missing.png"]
    # With the settings' defaults (no URL hosts), a query image is inline bytes and nothing else.
    with _search_with(env, ImageSettings(image_roots=[str(folder)]).public_image_intake()) as (stub, _):
        for uri in attacks[:1] + attacks[4:5]:
            err = _fails(lambda uri=uri: stub.FindSimilar(_by_uri(uri), timeout=TIMEOUT))
            assert err.details() == "query image: expected inline image bytes"


def test_slow_image_urls_cannot_starve_the_health_check(env: Env, image_server) -> None:
    """The attack: twenty FindSimilar calls whose image URL sends one byte every 3 s (under any per-read timeout),
    with 5 s deadlines, against 16 gRPC workers. Four download slots: the rest are refused at once, the four end at
    their deadline, and grpc.health.v1 answers within a second throughout."""
    image_server.images["slow.png"] = _png(1)
    image_server.drip_s = 3.0
    intake = ImageIntake(ImageLimits(max_bytes=IMAGE_MAX_BYTES, max_fetches=4),
                         IntakePolicy(url_hosts=(image_server.host,), private_networks=("127.0.0.1/32",))).for_public()
    with _search_with(env, intake, max_workers=16) as (stub, address), grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        results: list[tuple[grpc.StatusCode, float]] = []

        def attack() -> None:
            start = time.monotonic()
            try:
                stub.FindSimilar(_by_uri(image_server.url("drip/slow.png")), timeout=5)
                results.append((grpc.StatusCode.OK, time.monotonic() - start))
            except grpc.RpcError as err:
                results.append((err.code(), time.monotonic() - start))

        threads = [threading.Thread(target=attack) for _ in range(20)]
        for thread in threads:
            thread.start()
        latencies = []
        for _ in range(8):  # throughout the attack
            time.sleep(0.5)
            start = time.monotonic()
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
            latencies.append(time.monotonic() - start)
            assert status == health_pb2.HealthCheckResponse.SERVING
        for thread in threads:
            thread.join(timeout=15)
    refused = [t for code, t in results if code == grpc.StatusCode.UNAVAILABLE]
    slow = [(code, t) for code, t in results if code != grpc.StatusCode.UNAVAILABLE]
    assert len(refused) == 16 and max(refused) < 1.0
    # The fetch ends at the call's own deadline: the caller sees that, or the server's INVALID_ARGUMENT just before.
    assert len(slow) == 4 and {code for code, _ in slow} <= {grpc.StatusCode.DEADLINE_EXCEEDED,
                                                             grpc.StatusCode.INVALID_ARGUMENT}, slow
    assert max(t for _, t in slow) < 6.0
    print(f"health Check under the slow-URL attack: max {max(latencies) * 1000:.0f} ms over {len(latencies)} checks")
    assert max(latencies) < 1.0


# -- catalogue browsing (the web console's catalogue page) ------------------------------------------------------

def test_list_products_finds_by_id_prefix_or_title_and_pages(env: Env) -> None:
    live = sorted(pid for pid in CATALOGUE if pid != DELETED)
    everything = env.stub.ListProducts(search_pb2.ListProductsRequest(), timeout=TIMEOUT)
    assert [p.product_id for p in everything.products] == live and everything.total == len(live)
    first = everything.products[0]
    assert first.title == f"Title of {first.product_id}" and first.brand == "Acme" and first.currency == "EUR"
    assert sorted(i.image_id for i in first.images) == sorted(p.stem for p in env.images[first.product_id])
    by_title = env.stub.ListProducts(search_pb2.ListProductsRequest(query=f"TITLE OF {live[1]}"), timeout=TIMEOUT)
    assert [p.product_id for p in by_title.products] == [live[1]]
    page = env.stub.ListProducts(search_pb2.ListProductsRequest(query="p", limit=2, offset=2), timeout=TIMEOUT)
    assert [p.product_id for p in page.products] == live[2:4] and page.total == len(live)
    none = env.stub.ListProducts(search_pb2.ListProductsRequest(query="%"), timeout=TIMEOUT)  # LIKE taken literally
    assert none.total == 0
    err = _fails(lambda: env.stub.ListProducts(search_pb2.ListProductsRequest(limit=100_000), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.details()


def test_get_image_returns_a_bounded_jpeg_and_refuses_unknown_ids(env: Env) -> None:
    image_id = env.images["p1"][0].stem
    reply = env.stub.GetImage(search_pb2.GetImageRequest(image_id=image_id, max_px=40), timeout=TIMEOUT)
    thumb = Image.open(io.BytesIO(reply.jpeg))
    assert thumb.format == "JPEG" and max(thumb.size) <= 40 and reply.image_id == image_id
    assert _fails(lambda: env.stub.GetImage(search_pb2.GetImageRequest(image_id="nope"), timeout=TIMEOUT)).code() \
        == grpc.StatusCode.NOT_FOUND
    assert _fails(lambda: env.stub.GetImage(search_pb2.GetImageRequest(image_id=image_id, max_px=99_999),
                                            timeout=TIMEOUT)).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_products_shows_the_serving_versions_stored_predictions(env: Env) -> None:
    image_id = env.images["p1"][0].stem
    with env.sessions.begin() as session:
        repository.register_model_version(session, VERSION, architecture="fashionnet", checkpoint_path="/x.pt",
                                          embedding_dim=32)
        repository.set_serving(session, VERSION)
        repository.save_predictions(session, image_id, VERSION, "Tee", 0.9, {"cotton": 0.8, "striped": 0.6},
                                    [{"name": "left_collar", "x": 0.25, "y": 0.5, "visibility": 0}])
    reply = env.stub.ListProducts(search_pb2.ListProductsRequest(), timeout=TIMEOUT)
    assert reply.model_version == VERSION
    image = next(i for p in reply.products for i in p.images if i.image_id == image_id)
    prediction = image.prediction
    assert (prediction.category.name, round(prediction.category.score, 2)) == ("Tee", 0.9)
    assert [a.name for a in prediction.attributes] == ["cotton", "striped"]  # best first
    assert prediction.landmarks[0].visibility == common_pb2.VISIBILITY_VISIBLE
    others = [i for p in reply.products for i in p.images if i.image_id != image_id]
    assert others and not any(i.HasField("prediction") for i in others)
